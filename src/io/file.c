#include "io/file.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"

sdxl_status sdxl_read_file(const char *path, size_t max_bytes, char **out, size_t *len, sdxl_error *err) {
    *out = NULL;
    if (len) *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return sdxl_error_set(err, e == ENOENT ? SDXL_STATUS_NOT_FOUND : SDXL_STATUS_IO, "%s: cannot open: %s",
                              path, strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return sdxl_error_set(err, SDXL_STATUS_IO, "%s: not a regular file", path);
    }
    if ((unsigned long long)sb.st_size > max_bytes) {
        close(fd);
        return sdxl_error_set(err, SDXL_STATUS_BAD_INPUT, "%s: %lld bytes is too large (limit %zu bytes)", path,
                              (long long)sb.st_size, max_bytes);
    }
    size_t n = (size_t)sb.st_size;
    char *buf = sdxl_malloc(n + 1);
    if (!buf) {
        close(fd);
        return sdxl_error_set(err, SDXL_STATUS_OUT_OF_MEMORY, "%s: out of memory for %zu bytes", path, n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) { /* error, or the file shrank under us */
            int e = r < 0 ? errno : EIO;
            close(fd);
            sdxl_free(buf);
            return sdxl_error_set(err, SDXL_STATUS_IO, "%s: read failed: %s", path, strerror(e));
        }
        got += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return SDXL_STATUS_OK;
}
