/* The HTTP server (worker/http.h, worker/a1111.h) through real sockets on
 * loopback, on the demo model (64x64, a few steps): the native routes, the
 * A1111 subset, concurrency (identical requests give identical images
 * whatever is queued, nothing lost under 8 clients), a full queue (503 +
 * Retry-After), interrupt and cancel, hostile requests (malformed JSON,
 * wrong types, huge numbers, oversized bodies, slow clients, path
 * traversal), /metrics in Prometheus' text format, shutdown during a job
 * (in process and `sdxl serve` + SIGTERM), and a real A1111 client from
 * PyPI (webuiapi) when it is installed. */
#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/alloc.h"
#include "image/png.h"
#include "io/base64.h"
#include "test.h"
#include "worker/engine.h"
#include "worker/http.h"
#include "worker/queue.h"

#define DEMO SDXL_SOURCE_DIR "/demo"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void sleep_s(double s) {
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&t, NULL);
}

/* ---- a tiny HTTP/1.1 client ---------------------------------------------------------- */

typedef struct {
    int status; /* 0: no response (connection closed or timed out) */
    char head[8192];
    char *body;
    size_t len;
} resp_t;

static void resp_free(resp_t *r) {
    free(r->body);
    memset(r, 0, sizeof *r);
}

static int connect_port(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool send_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

/* Read until the server closes (requests say Connection: close), then split. */
static void read_resp(int fd, resp_t *r, double timeout_s) {
    memset(r, 0, sizeof *r);
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    double t0 = now_s();
    for (;;) {
        double left = timeout_s - (now_s() - t0);
        if (left <= 0) break;
        struct pollfd pf = {fd, POLLIN, 0};
        int pr = poll(&pf, 1, (int)(left * 1000) + 1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) break;
        if (len + 65536 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        len += (size_t)n;
    }
    buf[len] = 0;
    char *sep = strstr(buf, "\r\n\r\n");
    if (len > 12 && !strncmp(buf, "HTTP/1.", 7) && sep) {
        r->status = atoi(buf + 9);
        size_t hl = (size_t)(sep - buf);
        if (hl >= sizeof r->head) hl = sizeof r->head - 1;
        memcpy(r->head, buf, hl);
        r->head[hl] = 0;
        r->len = len - (size_t)(sep + 4 - buf);
        r->body = malloc(r->len + 1);
        memcpy(r->body, sep + 4, r->len);
        r->body[r->len] = 0;
    }
    free(buf);
}

static bool http(int port, const char *method, const char *path, const char *body, resp_t *r) {
    memset(r, 0, sizeof *r);
    int fd = connect_port(port);
    if (fd < 0) return false;
    size_t bl = body ? strlen(body) : 0;
    char head[512];
    int hn = snprintf(
        head, sizeof head,
        "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n"
        "Content-Length: %zu\r\n\r\n",
        method, path, bl);
    bool ok = send_all(fd, head, (size_t)hn) && (!bl || send_all(fd, body, bl));
    read_resp(fd, r, 300);
    close(fd);
    return ok && r->status;
}

static const char *header(const resp_t *r, const char *name, char *out, size_t n) {
    out[0] = 0;
    size_t nl = strlen(name);
    for (const char *l = strstr(r->head, "\r\n"); l; l = strstr(l + 2, "\r\n")) {
        const char *h = l + 2;
        if (!strncasecmp(h, name, nl) && h[nl] == ':') {
            h += nl + 1;
            while (*h == ' ')
                h++;
            size_t k = strcspn(h, "\r\n");
            snprintf(out, n, "%.*s", (int)k, h);
            return out;
        }
    }
    return NULL;
}

static cJSON *json_of(const resp_t *r) {
    return r->body ? cJSON_Parse(r->body) : NULL;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : "";
}

/* POST and parse; NULL when the status differs (reported). */
static cJSON *post_json(int port, const char *path, const char *body, int want, const char *file, int line) {
    resp_t r;
    http(port, "POST", path, body, &r);
    if (r.status != want) {
        sdxl_test_fail(file, line, "POST %s: status %d (want %d): %.400s", path, r.status, want,
                       r.body ? r.body : "");
        resp_free(&r);
        return NULL;
    }
    cJSON *j = json_of(&r);
    if (!j) sdxl_test_fail(file, line, "POST %s: the body is not JSON: %.200s", path, r.body ? r.body : "");
    resp_free(&r);
    return j;
}
#define POST(port, path, body, want) post_json(port, path, body, want, __FILE__, __LINE__)

/* ---- a server in this process ---------------------------------------------------------- */

typedef struct {
    sdxl_engine *e;
    sdxl_queue *q;
    sdxl_http_server *s;
    int port;
    char out[1024];
} fixture;

static bool fx_start(fixture *f, size_t queue_cap, size_t max_body) {
    static atomic_int n;
    memset(f, 0, sizeof *f);
    sdxl_engine_config cfg = sdxl_engine_default_config();
    snprintf(cfg.default_model, sizeof cfg.default_model, "%s", DEMO "/model");
    snprintf(f->out, sizeof f->out, "%s/http-out-%d", sdxl_test_tmpdir(), atomic_fetch_add(&n, 1));
    mkdir(f->out, 0700);
    snprintf(cfg.output_dir, sizeof cfg.output_dir, "%s", f->out);
    cfg.threads = 2;
    sdxl_error err = {0};
    if (sdxl_lora_worker_config_add_dir(&cfg.lora, DEMO "/loras", NULL, &err) ||
        sdxl_engine_create(&cfg, &f->e, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "engine: %s", err.msg);
        return false;
    }
    sdxl_queue_params qp = sdxl_queue_default_params();
    qp.capacity = queue_cap;
    if (sdxl_queue_create(f->e, &qp, &f->q, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "queue: %s", err.msg);
        sdxl_engine_free(f->e);
        return false;
    }
    sdxl_http_params p = sdxl_http_default_params();
    p.port = 0;
    p.threads = 2;
    p.max_body_bytes = max_body ? max_body : p.max_body_bytes;
    p.connection_timeout_s = 1;
    p.request_read_timeout_s = 2;
    p.quiet = true;
    if (sdxl_http_server_create(f->e, f->q, &p, &f->s, &err)) {
        sdxl_test_fail(__FILE__, __LINE__, "http: %s", err.msg);
        sdxl_queue_free(f->q);
        sdxl_engine_free(f->e);
        return false;
    }
    f->port = sdxl_http_server_port(f->s);
    return f->port > 0;
}

static void fx_stop(fixture *f) {
    sdxl_http_server_free(f->s);
    sdxl_queue_free(f->q);
    sdxl_engine_free(f->e);
    memset(f, 0, sizeof *f);
}

/* Wait until the server reports a running job (and `depth` queued). */
static bool wait_running(int port, int depth, double timeout_s) {
    double t0 = now_s();
    while (now_s() - t0 < timeout_s) {
        resp_t r;
        http(port, "GET", "/v1/health", NULL, &r);
        cJSON *j = json_of(&r);
        bool ok = j && cJSON_IsTrue(cJSON_GetObjectItem(j, "running")) &&
                  cJSON_GetObjectItem(j, "queue_depth")->valuedouble >= depth;
        cJSON_Delete(j);
        resp_free(&r);
        if (ok) return true;
        sleep_s(0.02);
    }
    return false;
}

/* A request on its own thread. */
typedef struct {
    int port;
    const char *path;
    char body[4096];
    resp_t r;
    pthread_t t;
} async_req;

static void *async_main(void *arg) {
    async_req *a = arg;
    http(a->port, "POST", a->path, a->body, &a->r);
    return NULL;
}

static void async_start(async_req *a, int port, const char *path, const char *body) {
    memset(a, 0, sizeof *a);
    a->port = port;
    a->path = path;
    snprintf(a->body, sizeof a->body, "%s", body);
    pthread_create(&a->t, NULL, async_main, a);
}

static void async_join(async_req *a) {
    pthread_join(a->t, NULL);
}

/* The PNG of images[i] of a native base64 result or an A1111 one. */
static bool decode_png(const char *b64, int *w, int *h, bool *has_params) {
    uint8_t *png = NULL, *rgb = NULL;
    size_t n = 0;
    sdxl_error err = {0};
    if (sdxl_base64_decode_alloc(b64, strlen(b64), 64 << 20, &png, &n, &err)) return false;
    bool ok = sdxl_png_decode(png, n, 1 << 24, &rgb, w, h, &err) == SDXL_STATUS_OK;
    *has_params = false;
    for (size_t i = 0; i + 15 < n; i++)
        if (!memcmp(png + i, "tEXtparameters", 15) || !memcmp(png + i, "iTXtparameters", 15))
            *has_params = true;
    sdxl_free(png);
    sdxl_free(rgb);
    return ok;
}

/* ---- routes --------------------------------------------------------------------------------- */

TEST(http_health_routes_and_metrics) {
    fixture f;
    if (!fx_start(&f, 4, 0)) return;
    resp_t r;
    char hv[256];
    http(f.port, "GET", "/v1/health", NULL, &r);
    CHECK_EQ_INT(r.status, 200);
    cJSON *j = json_of(&r);
    CHECK(j && !strcmp(jstr(j, "status"), "ok") && !strcmp(jstr(j, "model"), "model"));
    CHECK(j && cJSON_GetObjectItem(j, "queue_depth")->valuedouble == 0);
    cJSON_Delete(j);
    resp_free(&r);

    http(f.port, "GET", "/no/such/route", NULL, &r);
    CHECK_EQ_INT(r.status, 404);
    j = json_of(&r);
    CHECK(j && !strcmp(jstr(cJSON_GetObjectItem(j, "error"), "code"), "not_found"));
    cJSON_Delete(j);
    resp_free(&r);

    http(f.port, "GET", "/v1/generate", NULL, &r);
    CHECK_EQ_INT(r.status, 405);
    CHECK(header(&r, "Allow", hv, sizeof hv) && strstr(hv, "POST"));
    resp_free(&r);

    cJSON *g = POST(f.port, "/v1/generate",
                    "{\"prompt\":\"a red "
                    "circle\",\"width\":64,\"height\":64,\"steps\":2,\"seed\":1,\"output\":\"base64\"}",
                    200);
    cJSON_Delete(g);

    http(f.port, "GET", "/metrics", NULL, &r);
    CHECK_EQ_INT(r.status, 200);
    CHECK(header(&r, "Content-Type", hv, sizeof hv) && strstr(hv, "text/plain"));
    REQUIRE(r.body);
    regex_t re;
    REQUIRE(regcomp(&re,
                    "^[a-zA-Z_:][a-zA-Z0-9_:]*(\\{([a-zA-Z_][a-zA-Z0-9_]*=\"[^\"]*\",?)*\\})? [-+0-9.eE]+$",
                    REG_EXTENDED | REG_NOSUB) == 0);
    int lines = 0, bad = 0;
    char *save = NULL;
    for (char *l = strtok_r(r.body, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (l[0] == '#') {
            CHECK_MSG(!strncmp(l, "# HELP ", 7) || !strncmp(l, "# TYPE ", 7), "comment line: %s", l);
            continue;
        }
        lines++;
        if (regexec(&re, l, 0, NULL, 0) != 0 && bad++ < 5)
            sdxl_test_fail(__FILE__, __LINE__, "metrics line: %s", l);
    }
    regfree(&re);
    CHECK(lines > 50);
    resp_free(&r);
    http(f.port, "GET", "/metrics", NULL, &r);
    REQUIRE(r.body);
    CHECK(strstr(r.body, "sdxl_requests_total{endpoint=\"/v1/generate\",code=\"200\"} 1\n"));
    CHECK(strstr(r.body, "sdxl_requests_total{endpoint=\"/v1/health\",code=\"200\"} 1\n"));
    CHECK(strstr(r.body, "sdxl_requests_total{endpoint=\"other\",code=\"404\"} 1\n"));
    CHECK(strstr(r.body, "sdxl_stage_seconds_bucket{stage=\"denoise\",le=\"+Inf\"} 1\n"));
    CHECK(strstr(r.body, "sdxl_stage_seconds_count{stage=\"total\"} 1\n"));
    CHECK(strstr(r.body, "sdxl_queue_depth 0\n"));
    CHECK(strstr(r.body, "sdxl_lora_cache_hits_total "));
    CHECK(strstr(r.body, "sdxl_lora_cache_misses_total "));
    CHECK(strstr(r.body, "sdxl_lora_cache_bytes "));
    CHECK(strstr(r.body, "sdxl_engine_memory_bytes{kind=\"rss\"} "));
    resp_free(&r);
    fx_stop(&f);
}

TEST(http_generate_native) {
    fixture f;
    if (!fx_start(&f, 4, 0)) return;
    cJSON *j =
        POST(f.port, "/v1/generate",
             "{\"request_id\":\"n1\",\"prompt\":\"a red circle\",\"width\":64,\"height\":64,\"steps\":2,"
             "\"seed\":3,\"output\":\"base64\",\"lora\":{\"enabled\":true,\"models\":[\"outline_style\"]}}",
             200);
    if (j) {
        CHECK(!strcmp(jstr(j, "request_id"), "n1") && !strcmp(jstr(j, "status"), "ok"));
        cJSON *im = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "images"), 0);
        int w = 0, h = 0;
        bool par = false;
        CHECK(im && decode_png(jstr(im, "image"), &w, &h, &par) && w == 64 && h == 64 && par);
        cJSON *ad = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "lora"), "adapters"), 0);
        CHECK(ad && !strcmp(jstr(ad, "status"), "applied"));
        cJSON_Delete(j);
    }
    /* files under the server's output folder */
    j = POST(f.port, "/v1/generate",
             "{\"request_id\":\"n2\",\"prompt\":\"a blue square\",\"width\":64,\"height\":64,\"steps\":2,"
             "\"seed\":4,\"output_dir\":\"sub/dir\"}",
             200);
    if (j) {
        const char *path = jstr(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "images"), 0), "path");
        char want[1200];
        snprintf(want, sizeof want, "%s/sub/dir/", f.out);
        CHECK_MSG(!strncmp(path, want, strlen(want)), "path %s not under %s", path, want);
        struct stat sb;
        CHECK(stat(path, &sb) == 0 && sb.st_size > 100);
        cJSON_Delete(j);
    }
    /* native listings */
    resp_t r;
    http(f.port, "GET", "/v1/loras", NULL, &r);
    j = json_of(&r);
    CHECK(j && cJSON_GetObjectItem(j, "count")->valuedouble == 4);
    cJSON_Delete(j);
    resp_free(&r);
    j = POST(f.port, "/v1/loras/refresh", "", 200);
    CHECK(j && !strcmp(jstr(j, "status"), "ok") && cJSON_GetObjectItem(j, "count")->valuedouble == 4);
    cJSON_Delete(j);
    http(f.port, "GET", "/v1/models", NULL, &r);
    j = json_of(&r);
    CHECK(j && !strcmp(jstr(j, "default"), "model"));
    cJSON_Delete(j);
    resp_free(&r);
    fx_stop(&f);
}

/* ---- A1111 ------------------------------------------------------------------------------------ */

static bool has_warning(const cJSON *j, const char *needle) {
    const cJSON *w = cJSON_GetObjectItem(j, "warnings");
    for (const cJSON *it = w ? w->child : NULL; it; it = it->next)
        if (cJSON_IsString(it) && strstr(it->valuestring, needle)) return true;
    return false;
}

TEST(http_txt2img_a1111) {
    fixture f;
    if (!fx_start(&f, 4, 0)) return;
    cJSON *j = POST(
        f.port, "/sdapi/v1/txt2img",
        "{\"prompt\":\"a red circle <lora:outline_style:0.8>\",\"negative_prompt\":\"\",\"steps\":2,"
        "\"width\":64,\"height\":64,\"seed\":7,\"batch_size\":2,\"sampler_name\":\"Euler a\","
        "\"scheduler\":\"automatic\",\"styles\":[],\"restore_faces\":true,\"eta\":1.0,\"s_noise\":1,"
        "\"enable_hr\":false,\"hr_upscaler\":\"Latent\",\"alwayson_scripts\":{},\"override_settings\":{},"
        "\"send_images\":true,\"save_images\":false,\"not_an_a1111_field\":{\"x\":1}}",
        200);
    REQUIRE(j);
    cJSON *imgs = cJSON_GetObjectItem(j, "images");
    CHECK_EQ_INT(cJSON_GetArraySize(imgs), 2);
    for (cJSON *it = imgs ? imgs->child : NULL; it; it = it->next) {
        int w = 0, h = 0;
        bool par = false;
        CHECK(cJSON_IsString(it) && decode_png(it->valuestring, &w, &h, &par) && w == 64 && h == 64 && par);
    }
    cJSON *par = cJSON_GetObjectItem(j, "parameters");
    CHECK(par && cJSON_GetObjectItem(par, "steps")->valuedouble == 2);
    CHECK(par && cJSON_GetObjectItem(par, "cfg_scale")->valuedouble == 7); /* A1111's default, echoed */
    CHECK(par && !strcmp(jstr(par, "sampler_index"), "Euler"));
    CHECK(par && !cJSON_GetObjectItem(par, "not_an_a1111_field"));
    cJSON *info = cJSON_Parse(jstr(j, "info"));
    REQUIRE(info);
    CHECK(cJSON_GetObjectItem(info, "seed")->valuedouble == 7);
    cJSON *seeds = cJSON_GetObjectItem(info, "all_seeds");
    CHECK(cJSON_GetArraySize(seeds) == 2 && cJSON_GetArrayItem(seeds, 1)->valuedouble == 8);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(info, "infotexts")), 2);
    CHECK(!strcmp(jstr(info, "sampler_name"), "Euler a"));
    CHECK(strstr(jstr(cJSON_GetObjectItem(info, "extra_generation_params"), "Lora hashes"), "outline_style"));
    CHECK(strstr(jstr(info, "prompt"), "<lora:outline_style:0.8>")); /* A1111 keeps the tags */
    cJSON_Delete(info);
    /* fields A1111 has and we do not: warnings, not errors */
    CHECK(has_warning(j, "restore_faces"));
    CHECK(has_warning(j, "not_an_a1111_field"));
    CHECK(!has_warning(j, "eta") && !has_warning(j, "s_noise") && !has_warning(j, "hr_"));
    cJSON_Delete(j);

    /* wrong types and out-of-range values: FastAPI's 422, naming the field */
    static const struct {
        const char *body, *field;
    } bad[] = {
        {"{\"prompt\":\"x\",\"steps\":\"20\"}", "steps"},
        {"{\"prompt\":\"x\",\"steps\":0}", "steps"},
        {"{\"prompt\":\"x\",\"width\":1e300}", "width"},
        {"{\"prompt\":\"x\",\"height\":100}", "height"},
        {"{\"prompt\":\"x\",\"seed\":1.5}", "seed"},
        {"{\"prompt\":\"x\",\"seed\":1e30}", "seed"},
        {"{\"prompt\":\"x\",\"cfg_scale\":\"high\"}", "cfg_scale"},
        {"{\"prompt\":\"x\",\"batch_size\":100000}", "batch_size"},
        {"{\"prompt\":\"x\",\"styles\":\"anime\"}", "styles"},
        {"{\"prompt\":\"x\",\"styles\":[1]}", "styles"},
        {"{\"prompt\":\"x\",\"restore_faces\":\"yes\"}", "restore_faces"},
        {"{\"prompt\":\"x\",\"override_settings\":[]}", "override_settings"},
        {"{\"prompt\":7}", "prompt"},
        {"[1,2,3]", "body"},
        {"{\"prompt\":\"x\",", "body"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        resp_t r;
        http(f.port, "POST", "/sdapi/v1/txt2img", bad[i].body, &r);
        CHECK_MSG(r.status == 422, "%s: status %d", bad[i].body, r.status);
        cJSON *e = json_of(&r);
        cJSON *d0 = cJSON_GetArrayItem(cJSON_GetObjectItem(e, "detail"), 0);
        cJSON *loc = cJSON_GetObjectItem(d0, "loc");
        bool named = false;
        for (cJSON *l = loc ? loc->child : NULL; l; l = l->next)
            named = named || (cJSON_IsString(l) && !strcmp(l->valuestring, bad[i].field));
        CHECK_MSG(named, "%s: the error does not name %s: %s", bad[i].body, bad[i].field,
                  r.body ? r.body : "");
        cJSON_Delete(e);
        resp_free(&r);
    }
    /* an unknown sampler: A1111's 404 */
    resp_t r;
    http(f.port, "POST", "/sdapi/v1/txt2img", "{\"prompt\":\"x\",\"sampler_name\":\"No Such Sampler\"}", &r);
    CHECK_EQ_INT(r.status, 404);
    CHECK(r.body && strstr(r.body, "Sampler not found"));
    resp_free(&r);
    fx_stop(&f);
}

TEST(http_a1111_listings_and_options) {
    fixture f;
    if (!fx_start(&f, 4, 0)) return;
    resp_t r;
    char hv[512];
    http(f.port, "GET", "/sdapi/v1/samplers", NULL, &r);
    cJSON *j = json_of(&r);
    bool euler_a = false, dpm = false;
    for (cJSON *it = j ? j->child : NULL; it; it = it->next) {
        euler_a = euler_a || !strcmp(jstr(it, "name"), "Euler a");
        dpm = dpm || !strcmp(jstr(it, "name"), "DPM++ 2M");
        CHECK(cJSON_IsArray(cJSON_GetObjectItem(it, "aliases")) &&
              cJSON_IsObject(cJSON_GetObjectItem(it, "options")));
    }
    CHECK(euler_a && dpm);
    cJSON_Delete(j);
    resp_free(&r);

    http(f.port, "GET", "/sdapi/v1/sd-models", NULL, &r);
    j = json_of(&r);
    cJSON *m0 = cJSON_GetArrayItem(j, 0);
    CHECK(m0 && !strcmp(jstr(m0, "title"), "model") && !strcmp(jstr(m0, "model_name"), "model") &&
          strstr(jstr(m0, "filename"), "demo/model") && cJSON_GetObjectItem(m0, "sha256"));
    cJSON_Delete(j);
    resp_free(&r);

    http(f.port, "GET", "/sdapi/v1/loras", NULL, &r);
    j = json_of(&r);
    CHECK_EQ_INT(cJSON_GetArraySize(j),
                 3); /* one per name, as A1111: night_lighting.safetensors over its .pt */
    for (cJSON *it = j ? j->child : NULL; it; it = it->next)
        if (!strcmp(jstr(it, "name"), "night_lighting")) CHECK(strstr(jstr(it, "path"), ".safetensors"));
    bool found = false;
    for (cJSON *it = j ? j->child : NULL; it; it = it->next)
        if (!strcmp(jstr(it, "name"), "outline_style")) {
            found = true;
            CHECK(!strcmp(jstr(it, "alias"), "outline_style") &&
                  strstr(jstr(it, "path"), "outline_style.safetensors"));
            CHECK(cJSON_IsObject(cJSON_GetObjectItem(it, "metadata")));
        }
    CHECK(found);
    cJSON_Delete(j);
    resp_free(&r);

    http(f.port, "GET", "/sdapi/v1/options", NULL, &r);
    j = json_of(&r);
    CHECK(j && !strcmp(jstr(j, "sd_model_checkpoint"), "model") && !strcmp(jstr(j, "samples_format"), "png"));
    CHECK(j && cJSON_GetObjectItem(j, "CLIP_stop_at_last_layers")->valuedouble == 1);
    cJSON_Delete(j);
    resp_free(&r);
    http(f.port, "POST", "/sdapi/v1/options", "{\"sd_model_checkpoint\":\"no-such-model\"}", &r);
    CHECK_EQ_INT(r.status, 404);
    resp_free(&r);
    http(f.port, "POST", "/sdapi/v1/options",
         "{\"sd_model_checkpoint\":\"model\",\"randn_source\":\"CPU\",\"show_progressbar\":false}", &r);
    CHECK_EQ_INT(r.status, 200);
    CHECK(r.body && !strcmp(r.body, "null"));
    CHECK(header(&r, "X-SDXL-Warnings", hv, sizeof hv) && strstr(hv, "show_progressbar"));
    resp_free(&r);
    http(f.port, "POST", "/sdapi/v1/options", "{\"randn_source\":\"quantum\"}", &r);
    CHECK_EQ_INT(r.status, 422);
    resp_free(&r);
    http(f.port, "GET", "/sdapi/v1/options", NULL, &r);
    j = json_of(&r);
    CHECK(j && !strcmp(jstr(j, "randn_source"), "CPU"));
    cJSON_Delete(j);
    resp_free(&r);

    http(f.port, "GET", "/sdapi/v1/progress?skip_current_image=true", NULL, &r);
    j = json_of(&r);
    CHECK(j && cJSON_GetObjectItem(j, "progress")->valuedouble == 0);
    cJSON *st = cJSON_GetObjectItem(j, "state");
    CHECK(st && cJSON_GetObjectItem(st, "job_count") && cJSON_GetObjectItem(st, "sampling_steps") &&
          cJSON_IsFalse(cJSON_GetObjectItem(st, "interrupted")));
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(j, "current_image")));
    cJSON_Delete(j);
    resp_free(&r);

    http(f.port, "POST", "/sdapi/v1/refresh-loras", NULL, &r);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    http(f.port, "POST", "/sdapi/v1/interrupt", NULL, &r); /* nothing running: still {} */
    CHECK(r.status == 200 && r.body && !strcmp(r.body, "{}"));
    resp_free(&r);
    fx_stop(&f);
}

TEST(http_img2img_a1111) {
    fixture f;
    if (!fx_start(&f, 4, 0)) return;
    cJSON *t = POST(f.port, "/sdapi/v1/txt2img",
                    "{\"prompt\":\"a red circle\",\"steps\":2,\"width\":64,\"height\":64,\"seed\":2}", 200);
    REQUIRE(t);
    const char *b64 = cJSON_GetArrayItem(cJSON_GetObjectItem(t, "images"), 0)->valuestring;
    size_t n = strlen(b64) + 4096;
    char *body = malloc(n);
    snprintf(body, n,
             "{\"prompt\":\"a red circle at night\",\"init_images\":[\"data:image/png;base64,%s\"],"
             "\"denoising_strength\":0.5,\"steps\":4,\"width\":64,\"height\":64,\"seed\":5,\"mask\":null,"
             "\"resize_mode\":0,\"inpainting_fill\":1}",
             b64);
    cJSON *j = POST(f.port, "/sdapi/v1/img2img", body, 200);
    if (j) {
        CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "images")), 1);
        CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "parameters"), "init_images")));
        cJSON *info = cJSON_Parse(jstr(j, "info"));
        CHECK(info && cJSON_GetObjectItem(info, "denoising_strength")->valuedouble == 0.5);
        cJSON_Delete(info);
        cJSON_Delete(j);
    }
    /* A1111 resizes the init image to width x height */
    snprintf(body, n, "{\"prompt\":\"x\",\"init_images\":[\"%s\"],\"steps\":2,\"width\":128,\"height\":96}",
             b64);
    j = POST(f.port, "/sdapi/v1/img2img", body, 200);
    if (j) {
        int w = 0, h = 0;
        bool par = false;
        cJSON *im = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "images"), 0);
        CHECK(im && decode_png(im->valuestring, &w, &h, &par) && w == 128 && h == 96);
        cJSON_Delete(j);
    }
    resp_t r;
    http(f.port, "POST", "/sdapi/v1/img2img", "{\"prompt\":\"x\"}", &r); /* no init image */
    CHECK(r.status == 422 && r.body && strstr(r.body, "init_images"));
    resp_free(&r);
    http(f.port, "POST", "/sdapi/v1/img2img", "{\"prompt\":\"x\",\"init_images\":[\"bm90IGFuIGltYWdl\"]}",
         &r);
    CHECK(r.status == 422 && r.body && strstr(r.body, "init_images"));
    resp_free(&r);
    free(body);
    cJSON_Delete(t);
    fx_stop(&f);
}

/* ---- concurrency ---------------------------------------------------------------------------------- */

static char *first_image(const resp_t *r) {
    cJSON *j = json_of(r);
    cJSON *im = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "images"), 0);
    const char *s = cJSON_IsString(im) ? im->valuestring : jstr(im, "image");
    char *d = s && *s ? strdup(s) : NULL;
    cJSON_Delete(j);
    return d;
}

TEST(http_identical_requests_identical_images) {
    fixture f;
    if (!fx_start(&f, 16, 0)) return;
    const char *A = "{\"prompt\":\"a red "
                    "circle\",\"width\":64,\"height\":64,\"steps\":3,\"seed\":11,\"output\":\"base64\"}";
    resp_t r;
    http(f.port, "POST", "/v1/generate", A, &r);
    REQUIRE(r.status == 200);
    char *ref = first_image(&r);
    resp_free(&r);
    REQUIRE(ref);
    /* the same request among others: different prompts, seeds, adapters, batch */
    static const char *const others[] = {
        "{\"prompt\":\"a blue "
        "square\",\"width\":64,\"height\":64,\"steps\":3,\"seed\":12,\"output\":\"base64\","
        "\"lora\":{\"enabled\":true,\"models\":[{\"name\":\"outline_style\",\"weight\":1.5}]}}",
        "{\"prompt\":\"a green triangle "
        "<lora:smiley_face:1>\",\"width\":64,\"height\":64,\"steps\":2,\"seed\":-1,"
        "\"batch_size\":2,\"output\":\"base64\"}",
        "{\"prompt\":\"night <lora:night_lighting:0.7>\",\"width\":64,\"height\":64,\"steps\":2,\"seed\":5,"
        "\"scheduler\":\"DPM++ 2M Karras\",\"output\":\"base64\"}",
    };
    async_req reqs[8];
    int k = 0;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 3; i++)
            async_start(&reqs[k++], f.port, "/v1/generate", others[i]);
        async_start(&reqs[k++], f.port, "/v1/generate", A);
    }
    for (int i = 0; i < k; i++)
        async_join(&reqs[i]);
    int same = 0;
    for (int i = 0; i < k; i++) {
        CHECK_MSG(reqs[i].r.status == 200, "request %d: %d %.200s", i, reqs[i].r.status,
                  reqs[i].r.body ? reqs[i].r.body : "");
        if (!strcmp(reqs[i].body, A)) {
            char *img = first_image(&reqs[i].r);
            CHECK_MSG(img && !strcmp(img, ref), "request %d: the image differs from the one made alone", i);
            same++;
            free(img);
        }
        resp_free(&reqs[i].r);
    }
    CHECK_EQ_INT(same, 2);
    /* A1111 too: the same seed twice, another request in between */
    const char *B = "{\"prompt\":\"a red circle\",\"steps\":2,\"width\":64,\"height\":64,\"seed\":9}";
    http(f.port, "POST", "/sdapi/v1/txt2img", B, &r);
    char *b1 = first_image(&r);
    resp_free(&r);
    cJSON_Delete(POST(f.port, "/sdapi/v1/txt2img",
                      "{\"prompt\":\"x <lora:outline_style:1>\",\"steps\":2,\"width\":64,\"height\":64}",
                      200));
    http(f.port, "POST", "/sdapi/v1/txt2img", B, &r);
    char *b2 = first_image(&r);
    resp_free(&r);
    CHECK(b1 && b2 && !strcmp(b1, b2));
    free(b1);
    free(b2);
    free(ref);
    fx_stop(&f);
}

typedef struct {
    int port, id, ok, health_ok;
    char err[300];
    pthread_t t;
} client_t;

static void *client_main(void *arg) {
    client_t *c = arg;
    for (int i = 0; i < 3; i++) {
        char body[512], want[64];
        snprintf(want, sizeof want, "c%d-%d", c->id, i);
        snprintf(body, sizeof body,
                 "{\"request_id\":\"%s\",\"prompt\":\"shape "
                 "%d\",\"width\":64,\"height\":64,\"steps\":2,\"seed\":%d,"
                 "\"output\":\"base64\"}",
                 want, c->id, c->id * 10 + i);
        resp_t r;
        http(c->port, "POST", "/v1/generate", body, &r);
        cJSON *j = json_of(&r);
        if (r.status == 200 && j && !strcmp(jstr(j, "request_id"), want) &&
            cJSON_GetArraySize(cJSON_GetObjectItem(j, "images")) == 1)
            c->ok++;
        else
            snprintf(c->err, sizeof c->err, "%s: %d %.200s", want, r.status, r.body ? r.body : "");
        cJSON_Delete(j);
        resp_free(&r);
        http(c->port, "GET", "/v1/health", NULL, &r);
        c->health_ok += r.status == 200;
        resp_free(&r);
    }
    return NULL;
}

TEST(http_concurrent_clients_nothing_lost) {
    fixture f;
    if (!fx_start(&f, 64, 0)) return;
    client_t c[8];
    for (int i = 0; i < 8; i++) {
        memset(&c[i], 0, sizeof c[i]);
        c[i].port = f.port;
        c[i].id = i;
        pthread_create(&c[i].t, NULL, client_main, &c[i]);
    }
    int ok = 0, hok = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(c[i].t, NULL);
        ok += c[i].ok;
        hok += c[i].health_ok;
        CHECK_MSG(!c[i].err[0], "client %d: %s", i, c[i].err);
    }
    CHECK_EQ_INT(ok, 24);
    CHECK_EQ_INT(hok, 24);
    /* the queue counts a job done just after its answer went out: give it a moment */
    bool counted = false;
    for (int tries = 0; tries < 100 && !counted; tries++) {
        resp_t r;
        http(f.port, "GET", "/metrics", NULL, &r);
        counted = r.body &&
                  strstr(r.body, "sdxl_requests_total{endpoint=\"/v1/generate\",code=\"200\"} 24\n") &&
                  strstr(r.body, "sdxl_jobs_total{state=\"done\"} 24\n");
        resp_free(&r);
        if (!counted) sleep_s(0.05);
    }
    CHECK(counted);
    fx_stop(&f);
}

TEST(http_queue_full_and_cancel) {
    fixture f;
    if (!fx_start(&f, 1, 0)) return;
    async_req longj, queued;
    async_start(&longj, f.port, "/v1/generate",
                "{\"request_id\":\"long\",\"prompt\":\"x\",\"width\":64,\"height\":64,\"steps\":1000,"
                "\"output\":\"base64\"}");
    REQUIRE(wait_running(f.port, 0, 60));
    async_start(&queued, f.port, "/v1/generate",
                "{\"request_id\":\"q1\",\"prompt\":\"y\",\"width\":64,\"height\":64,\"steps\":2,\"output\":"
                "\"base64\"}");
    CHECK(wait_running(f.port, 1, 60));
    resp_t r;
    char hv[64];
    double t0 = now_s();
    http(f.port, "POST", "/v1/generate", "{\"prompt\":\"z\",\"width\":64,\"height\":64,\"steps\":2}", &r);
    CHECK_EQ_INT(r.status, 503);
    CHECK(now_s() - t0 < 5); /* at once, not after the queue drains */
    CHECK(header(&r, "Retry-After", hv, sizeof hv) && atoi(hv) > 0);
    cJSON *j = json_of(&r);
    CHECK(j && !strcmp(jstr(cJSON_GetObjectItem(j, "error"), "code"), "queue_full"));
    cJSON_Delete(j);
    resp_free(&r);
    http(f.port, "POST", "/sdapi/v1/txt2img", "{\"prompt\":\"z\",\"width\":64,\"height\":64,\"steps\":2}",
         &r);
    CHECK_EQ_INT(r.status, 503);
    CHECK(header(&r, "Retry-After", hv, sizeof hv));
    resp_free(&r);
    /* cancel the running one: it answers "cancelled", the queued one then runs */
    j = POST(f.port, "/v1/cancel", "{\"request_id\":\"long\"}", 200);
    cJSON_Delete(j);
    j = POST(f.port, "/v1/cancel", "{\"request_id\":\"nope\"}", 404);
    cJSON_Delete(j);
    async_join(&longj);
    async_join(&queued);
    CHECK_EQ_INT(longj.r.status, 200);
    j = json_of(&longj.r);
    CHECK(j && !strcmp(jstr(j, "status"), "cancelled"));
    cJSON_Delete(j);
    CHECK_EQ_INT(queued.r.status, 200);
    j = json_of(&queued.r);
    CHECK(j && !strcmp(jstr(j, "status"), "ok"));
    cJSON_Delete(j);
    resp_free(&longj.r);
    resp_free(&queued.r);
    sdxl_http_stats hs;
    sdxl_http_server_stats(f.s, &hs);
    CHECK(hs.rejected_full == 2);
    fx_stop(&f);
}

TEST(http_interrupt_returns_finished_images) {
    fixture f;
    if (!fx_start(&f, 4, 0)) return;
    async_req a;
    async_start(
        &a, f.port, "/sdapi/v1/txt2img",
        "{\"prompt\":\"a red circle\",\"steps\":40,\"width\":64,\"height\":64,\"seed\":3,\"n_iter\":3}");
    /* wait for the second round to begin */
    double t0 = now_s();
    bool seen = false;
    while (now_s() - t0 < 300 && !seen) {
        resp_t r;
        http(f.port, "GET", "/sdapi/v1/progress", NULL, &r);
        cJSON *j = json_of(&r);
        cJSON *st = cJSON_GetObjectItem(j, "state");
        if (st && cJSON_GetObjectItem(st, "job_no")->valuedouble >= 1) {
            seen = true;
            CHECK(!strcmp(jstr(st, "job"), "scripts_txt2img"));
            CHECK(cJSON_GetObjectItem(st, "job_count")->valuedouble == 3);
            CHECK(cJSON_GetObjectItem(st, "sampling_steps")->valuedouble == 40);
            double p = cJSON_GetObjectItem(j, "progress")->valuedouble;
            CHECK(p > 0.3 && p <= 1);
        }
        cJSON_Delete(j);
        resp_free(&r);
        if (!seen) sleep_s(0.01);
    }
    CHECK(seen);
    resp_t r;
    http(f.port, "POST", "/sdapi/v1/interrupt", NULL, &r);
    CHECK(r.status == 200 && r.body && !strcmp(r.body, "{}"));
    resp_free(&r);
    async_join(&a);
    CHECK_EQ_INT(a.r.status, 200);
    cJSON *j = json_of(&a.r);
    int n = cJSON_GetArraySize(cJSON_GetObjectItem(j, "images"));
    CHECK_MSG(n >= 1 && n < 3, "%d images after the interrupt", n);
    CHECK(has_warning(j, "interrupted"));
    cJSON *info = cJSON_Parse(jstr(j, "info"));
    CHECK(info && cJSON_GetArraySize(cJSON_GetObjectItem(info, "all_seeds")) == 3);
    CHECK(info && cJSON_GetArraySize(cJSON_GetObjectItem(info, "infotexts")) == n);
    cJSON_Delete(info);
    cJSON_Delete(j);
    resp_free(&a.r);
    http(f.port, "GET", "/sdapi/v1/progress", NULL, &r);
    j = json_of(&r);
    CHECK(j && cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "state"), "interrupted")));
    cJSON_Delete(j);
    resp_free(&r);
    fx_stop(&f);
}

/* ---- hostile requests ------------------------------------------------------------------------------- */

TEST(http_malformed_and_wrong_types) {
    fixture f;
    if (!fx_start(&f, 4, 0)) return;
    static const struct {
        const char *body, *code, *field;
    } cases[] = {
        {"{bad json", "invalid_json", NULL},
        {"", "invalid_json", NULL},
        {"[1,2]", "invalid_type", NULL},
        {"{\"prompt\":\"x\",\"steps\":\"20\"}", "invalid_type", "steps"},
        {"{\"prompt\":\"x\",\"width\":1e300}", "out_of_range", "width"},
        {"{\"prompt\":\"x\",\"steps\":99999999999999999999999}", "out_of_range", "steps"},
        {"{\"prompt\":\"x\",\"seed\":1e30}", "out_of_range", "seed"},
        {"{\"prompt\":\"x\",\"guidance_scale\":-1}", "out_of_range", "guidance_scale"},
        {"{\"prompt\":\"x\",\"batch_size\":2.5}", "invalid_type", "batch_size"},
        {"{\"prompt\":\"x\",\"lora\":{\"enabled\":true,\"models\":[{\"name\":\"a\",\"weight\":\"heavy\"}]}}",
         "invalid_type", "lora.models[0].weight"},
        {"{\"prompt\":\"x\",\"bogus\":1}", "unknown_field", "bogus"},
        {"{\"steps\":3}", "missing_field", "prompt"},
        {"{\"prompt\":\"x\",\"init_image\":\"!!!\"}", "invalid_image", "init_image"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        resp_t r;
        http(f.port, "POST", "/v1/generate", cases[i].body, &r);
        CHECK_MSG(r.status == 400, "%s: status %d", cases[i].body, r.status);
        cJSON *j = json_of(&r);
        cJSON *e = cJSON_GetObjectItem(j, "error");
        CHECK_MSG(j && !strcmp(jstr(j, "status"), "error") && !strcmp(jstr(e, "code"), cases[i].code),
                  "%s: %s", cases[i].body, r.body ? r.body : "");
        if (cases[i].field)
            CHECK_MSG(!strcmp(jstr(e, "field"), cases[i].field) && strstr(jstr(e, "message"), cases[i].field),
                      "%s: %s", cases[i].body, r.body ? r.body : "");
        else if (!strcmp(cases[i].code, "invalid_json"))
            CHECK_MSG(strstr(jstr(e, "message"), "byte"), "%s: %s", cases[i].body, r.body ? r.body : "");
        cJSON_Delete(j);
        resp_free(&r);
    }
    /* deep nesting must not crash the parser */
    size_t depth = 200000;
    char *deep = malloc(2 * depth + 1);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    deep[2 * depth] = 0;
    resp_t r;
    http(f.port, "POST", "/v1/generate", deep, &r);
    CHECK_EQ_INT(r.status, 400);
    resp_free(&r);
    http(f.port, "POST", "/sdapi/v1/txt2img", deep, &r);
    CHECK_EQ_INT(r.status, 422);
    resp_free(&r);
    free(deep);
    /* still serving */
    http(f.port, "GET", "/v1/health", NULL, &r);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    fx_stop(&f);
}

static int raw_exchange(int port, const char *const *parts, size_t n_parts, const size_t *lens, double gap_s,
                        resp_t *r, double timeout_s) {
    int fd = connect_port(port);
    if (fd < 0) return -1;
    bool sent = true;
    for (size_t i = 0; i < n_parts && sent; i++) {
        sent = send_all(fd, parts[i], lens ? lens[i] : strlen(parts[i]));
        if (gap_s > 0 && i + 1 < n_parts) sleep_s(gap_s);
    }
    read_resp(fd, r, timeout_s);
    close(fd);
    return sent ? 1 : 0;
}

TEST(http_oversized_bodies) {
    fixture f;
    if (!fx_start(&f, 4, 64 * 1024)) return;
    /* Content-Length over the cap: 413 before the body is sent */
    const char *head = "POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n";
    resp_t r;
    double t0 = now_s();
    raw_exchange(f.port, &head, 1, NULL, 0, &r, 10);
    CHECK_EQ_INT(r.status, 413);
    CHECK(now_s() - t0 < 5);
    cJSON *j = json_of(&r);
    CHECK(j && !strcmp(jstr(cJSON_GetObjectItem(j, "error"), "code"), "too_large"));
    cJSON_Delete(j);
    resp_free(&r);
    const char *ahead =
        "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n";
    raw_exchange(f.port, &ahead, 1, NULL, 0, &r, 10);
    CHECK_EQ_INT(r.status, 413);
    resp_free(&r);
    /* chunked, no length given: counted as it arrives */
    size_t big = 200 * 1024;
    char *chunk = malloc(big + 64);
    int hl = snprintf(chunk, 64, "%zx\r\n", big);
    memset(chunk + hl, 'a', big);
    memcpy(chunk + hl + big, "\r\n0\r\n\r\n", 8);
    const char *parts[2] = {"POST /v1/generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                            chunk};
    size_t lens[2] = {strlen(parts[0]), (size_t)hl + big + 7};
    raw_exchange(f.port, parts, 2, lens, 0, &r, 10);
    CHECK_MSG(r.status == 413 || r.status == 0, "chunked over the cap: %d", r.status);
    resp_free(&r);
    free(chunk);
    http(f.port, "GET", "/v1/health", NULL, &r);
    CHECK_EQ_INT(r.status, 200);
    resp_free(&r);
    sdxl_http_stats hs;
    sdxl_http_server_stats(f.s, &hs);
    CHECK(hs.too_large >= 2); /* libmicrohttpd answers a Content-Length it cannot parse itself */
    fx_stop(&f);
}

typedef struct {
    int port;
    double gap;
    resp_t r;
    double took;
    pthread_t t;
} slow_t;

static void *slow_main(void *arg) {
    slow_t *s = arg;
    static const char req[] =
        "GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    const char *parts[sizeof req];
    size_t lens[sizeof req];
    for (size_t i = 0; i + 1 < sizeof req; i++)
        parts[i] = req + i, lens[i] = 1;
    double t0 = now_s();
    raw_exchange(s->port, parts, sizeof req - 1, lens, s->gap, &s->r, 60);
    s->took = now_s() - t0;
    return NULL;
}

TEST(http_slow_clients_dropped_others_served) {
    fixture f; /* idle timeout 1 s, whole-request deadline 2 s */
    if (!fx_start(&f, 4, 0)) return;
    slow_t loris = {.port = f.port, .gap = 0.25}; /* never idle for 1 s, but 20 s for the headers */
    slow_t sleepy = {.port = f.port, .gap = 1.6}; /* idle longer than the timeout */
    pthread_create(&loris.t, NULL, slow_main, &loris);
    pthread_create(&sleepy.t, NULL, slow_main, &sleepy);
    sleep_s(0.2);
    /* others are served meanwhile, and quickly */
    for (int i = 0; i < 5; i++) {
        resp_t r;
        double t0 = now_s();
        http(f.port, "GET", "/v1/health", NULL, &r);
        CHECK_EQ_INT(r.status, 200);
        CHECK(now_s() - t0 < 1.0);
        resp_free(&r);
        sleep_s(0.1);
    }
    cJSON_Delete(POST(f.port, "/v1/generate",
                      "{\"prompt\":\"x\",\"width\":64,\"height\":64,\"steps\":2,\"output\":\"base64\"}",
                      200));
    pthread_join(loris.t, NULL);
    pthread_join(sleepy.t, NULL);
    CHECK_MSG(loris.r.status == 0 && loris.took < 10, "slowloris: status %d after %.1f s", loris.r.status,
              loris.took);
    CHECK_MSG(sleepy.r.status == 0, "idle client: status %d after %.1f s", sleepy.r.status, sleepy.took);
    resp_free(&loris.r);
    resp_free(&sleepy.r);
    sdxl_http_stats hs;
    sdxl_http_server_stats(f.s, &hs);
    CHECK(hs.reaped >= 1);
    fx_stop(&f);
}

TEST(http_path_traversal_refused) {
    fixture f;
    if (!fx_start(&f, 4, 0)) return;
    char outside[1200], link[1200];
    snprintf(outside, sizeof outside, "%s/outside-%d", sdxl_test_tmpdir(), (int)getpid());
    mkdir(outside, 0700);
    snprintf(link, sizeof link, "%s/escape", f.out);
    CHECK(symlink(outside, link) == 0);
    static const struct {
        const char *body, *field;
    } cases[] = {
        {"{\"prompt\":\"x\",\"output_dir\":\"../up\"}", "output_dir"},
        {"{\"prompt\":\"x\",\"output_dir\":\"a/../../up\"}", "output_dir"},
        {"{\"prompt\":\"x\",\"output_dir\":\"/tmp\"}", "output_dir"},
        {"{\"prompt\":\"x\",\"output_dir\":\"escape/deeper\"}", "output_dir"}, /* through a link */
        {"{\"prompt\":\"x\",\"output_dir\":\"escape\"}", "output_dir"},
        {"{\"prompt\":\"x\",\"request_id\":\"../../evil\"}", "request_id"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        resp_t r;
        http(f.port, "POST", "/v1/generate", cases[i].body, &r);
        CHECK_MSG(r.status == 400, "%s: status %d", cases[i].body, r.status);
        cJSON *j = json_of(&r);
        CHECK_MSG(!strcmp(jstr(cJSON_GetObjectItem(j, "error"), "field"), cases[i].field), "%s: %s",
                  cases[i].body, r.body ? r.body : "");
        cJSON_Delete(j);
        resp_free(&r);
    }
    /* nothing was written outside */
    char probe[1300];
    snprintf(probe, sizeof probe, "%s/deeper", outside);
    struct stat sb;
    CHECK(stat(probe, &sb) != 0);
    /* LoRA names that leave the directories: refused per adapter, the image still made */
    cJSON *j =
        POST(f.port, "/v1/generate",
             "{\"prompt\":\"x\",\"width\":64,\"height\":64,\"steps\":2,\"output\":\"base64\",\"lora\":{"
             "\"enabled\":true,"
             "\"models\":[\"../../../../etc/passwd\",\"/etc/passwd\",\"styles/../../model/unet/config\"]}}",
             200);
    if (j) {
        cJSON *ads = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "lora"), "adapters");
        CHECK_EQ_INT(cJSON_GetArraySize(ads), 3);
        for (cJSON *a = ads ? ads->child : NULL; a; a = a->next)
            CHECK_MSG(!strcmp(jstr(a, "status"), "invalid_name"), "%s: %s", jstr(a, "name"),
                      jstr(a, "status"));
        CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "images")), 1);
        cJSON_Delete(j);
    }
    j = POST(f.port, "/sdapi/v1/txt2img",
             "{\"prompt\":\"x <lora:../../../etc/passwd:1>\",\"steps\":2,\"width\":64,\"height\":64}", 200);
    CHECK(j && has_warning(j, "invalid_name"));
    cJSON_Delete(j);
    /* save_images with a hostile task id */
    resp_t r;
    http(f.port, "POST", "/sdapi/v1/txt2img",
         "{\"prompt\":\"x\",\"steps\":2,\"width\":64,\"height\":64,\"save_images\":true,\"force_task_id\":\"."
         "./../x\"}",
         &r);
    CHECK_EQ_INT(r.status, 422);
    resp_free(&r);
    fx_stop(&f);
}

/* ---- shutdown --------------------------------------------------------------------------------------- */

typedef struct {
    sdxl_http_server *s;
    pthread_t t;
} shut_t;

static void *shut_main(void *arg) {
    sdxl_http_server_shutdown(((shut_t *)arg)->s);
    return NULL;
}

TEST(http_shutdown_finishes_running_job) {
    fixture f;
    if (!fx_start(&f, 4, 0)) return;
    async_req running, queued;
    async_start(&running, f.port, "/v1/generate",
                "{\"request_id\":\"run\",\"prompt\":\"x\",\"width\":64,\"height\":64,\"steps\":60,\"output\":"
                "\"base64\"}");
    REQUIRE(wait_running(f.port, 0, 60));
    async_start(&queued, f.port, "/v1/generate",
                "{\"request_id\":\"wait\",\"prompt\":\"y\",\"width\":64,\"height\":64,\"steps\":2,\"output\":"
                "\"base64\"}");
    CHECK(wait_running(f.port, 1, 60));
    shut_t sh = {.s = f.s};
    pthread_create(&sh.t, NULL, shut_main, &sh);
    async_join(&running);
    async_join(&queued);
    pthread_join(sh.t, NULL);
    CHECK_EQ_INT(running.r.status, 200);
    cJSON *j = json_of(&running.r);
    CHECK(j && !strcmp(jstr(j, "status"), "ok") && cJSON_GetArraySize(cJSON_GetObjectItem(j, "images")) == 1);
    cJSON_Delete(j);
    CHECK_EQ_INT(queued.r.status, 503);
    resp_free(&running.r);
    resp_free(&queued.r);
    CHECK(connect_port(f.port) < 0); /* no longer listening */
    fx_stop(&f);
}

TEST(http_serve_cli_sigterm) {
    int errp[2];
    REQUIRE(pipe(errp) == 0);
    /* the server block of the config file, the rest from the command line */
    char config[1024];
    snprintf(config, sizeof config, "%s/serve-config.json", sdxl_test_tmpdir());
    FILE *cf = fopen(config, "w");
    REQUIRE(cf);
    fprintf(cf,
            "{\"lora_config\": {\"lora_directories\": [\"%s\"], \"cache_size\": 4},\n"
            " \"server\": {\"host\": \"127.0.0.1\", \"port\": 0, \"queue_size\": 4, \"max_body_mb\": 8,\n"
            "            \"output_dir\": \"serve-cli-out\", \"connection_timeout_s\": 10, "
            "\"compute_threads\": 2}}\n",
            DEMO "/loras");
    fclose(cf);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(errp[1], 2);
        close(errp[0]);
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) dup2(devnull, 1);
        execl(SDXL_BINARY_DIR "/sdxl", "sdxl", "serve", "--model", DEMO "/model", "--config", config,
              (char *)NULL);
        _exit(127);
    }
    close(errp[1]);
    REQUIRE(pid > 0);
    /* "listening on http://127.0.0.1:PORT" */
    char buf[8192];
    size_t len = 0;
    int port = 0;
    double t0 = now_s();
    while (!port && now_s() - t0 < 60 && len + 1 < sizeof buf) {
        struct pollfd pf = {errp[0], POLLIN, 0};
        if (poll(&pf, 1, 200) <= 0) continue;
        ssize_t n = read(errp[0], buf + len, sizeof buf - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
        buf[len] = 0;
        char *l = strstr(buf, "listening on http://127.0.0.1:");
        if (l && strchr(l, '\n')) port = atoi(l + strlen("listening on http://127.0.0.1:"));
    }
    if (!port) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(errp[0]);
        sdxl_test_fail(__FILE__, __LINE__, "no 'listening on' line: %s", buf);
        return;
    }
    async_req job;
    async_start(&job, port, "/v1/generate",
                "{\"request_id\":\"cli\",\"prompt\":\"x\",\"width\":64,\"height\":64,\"steps\":60,\"output\":"
                "\"base64\"}");
    CHECK(wait_running(port, 0, 60));
    resp_t lr;
    http(port, "GET", "/sdapi/v1/loras", NULL, &lr); /* lora_config from the file */
    CHECK(lr.body && strstr(lr.body, "outline_style"));
    resp_free(&lr);
    kill(pid, SIGTERM);
    async_join(&job);
    CHECK_EQ_INT(job.r.status, 200);
    cJSON *j = json_of(&job.r);
    CHECK(j && !strcmp(jstr(j, "status"), "ok"));
    cJSON_Delete(j);
    resp_free(&job.r);
    int status = 0;
    t0 = now_s();
    pid_t w = 0;
    while ((w = waitpid(pid, &status, WNOHANG)) == 0 && now_s() - t0 < 60)
        sleep_s(0.05);
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        sdxl_test_fail(__FILE__, __LINE__, "sdxl serve did not exit after SIGTERM");
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(errp[0]);
}

/* ---- a real A1111 client ------------------------------------------------------------------------------ */

TEST(http_webuiapi_client) {
    const char *py = getenv("SDXL_TEST_PYTHON");
    if (!py || !*py) py = "python3";
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' -c 'import webuiapi' >/dev/null 2>&1", py);
    if (system(cmd) != 0) {
        printf("skipped: webuiapi not installed (pip install webuiapi)\n");
        return;
    }
    fixture f;
    if (!fx_start(&f, 4, 0)) return;
    char script[1024];
    snprintf(script, sizeof script, "%s/webuiapi_check.py", sdxl_test_tmpdir());
    FILE *fp = fopen(script, "w");
    REQUIRE(fp);
    fputs(
        "import sys, webuiapi\n"
        "api = webuiapi.WebUIApi(host='127.0.0.1', port=int(sys.argv[1]))\n"
        "r = api.txt2img(prompt='a red circle <lora:outline_style:0.8>', negative_prompt='blurry', steps=2,\n"
        "                width=64, height=64, seed=42, cfg_scale=6, sampler_name='Euler')\n"
        "assert r.image.size == (64, 64), r.image.size\n"
        "assert r.image.info.get('parameters', '').startswith('a red circle'), r.image.info\n"
        "assert r.info['seed'] == 42 and r.info['all_seeds'] == [42], r.info\n"
        "assert r.parameters['steps'] == 2\n"
        "r2 = api.txt2img(prompt='a red circle <lora:outline_style:0.8>', negative_prompt='blurry', "
        "steps=2,\n"
        "                 width=64, height=64, seed=42, cfg_scale=6, sampler_name='Euler')\n"
        "assert r2.image.tobytes() == r.image.tobytes()\n"
        "names = [l['name'] for l in api.get_loras()]\n"
        "assert 'outline_style' in names and 'smiley_face' in names, names\n"
        "assert 'Euler a' in api.util_get_sampler_names()\n"
        "assert api.util_get_model_names() == ['model']\n"
        "assert api.util_get_current_model() == 'model'\n"
        "p = api.get_progress()\n"
        "assert 'progress' in p and 'state' in p\n"
        "i = api.img2img(images=[r.image], prompt='x', steps=2, width=64, height=64, "
        "denoising_strength=0.5)\n"
        "assert i.image.size == (64, 64)\n"
        "print('WEBUIAPI OK')\n",
        fp);
    fclose(fp);
    snprintf(cmd, sizeof cmd, "'%s' '%s' %d 2>&1", py, script, f.port);
    FILE *pp = popen(cmd, "r");
    REQUIRE(pp);
    char out[16384];
    size_t n = fread(out, 1, sizeof out - 1, pp);
    out[n] = 0;
    int rc = pclose(pp);
    CHECK_MSG(rc == 0 && strstr(out, "WEBUIAPI OK"), "webuiapi script (rc %d): %s", rc, out);
    fx_stop(&f);
}

TEST(http_config_server_block) {
    sdxl_http_server_config c = sdxl_http_server_default_config();
    sdxl_error err = {0};
    const char *ok =
        "{\"host\":\"0.0.0.0\",\"port\":8080,\"queue_size\":3,\"max_body_mb\":2,\"timeout_s\":30,"
        "\"output_dir\":\"out\",\"models\":{\"turbo\":\"/m/"
        "turbo.safetensors\",\"base\":\"base\"},\"a1111\":false}";
    REQUIRE_OK(sdxl_http_server_config_parse(ok, strlen(ok), "/etc/sdxl", &c, &err), &err);
    CHECK(!strcmp(c.http.host, "0.0.0.0") && c.http.port == 8080 && c.queue_size == 3);
    CHECK(c.http.max_body_bytes == 2u << 20 && c.timeout_s == 30 && !c.http.enable_a1111);
    CHECK(c.has_output_dir && !strcmp(c.output_dir, "/etc/sdxl/out"));
    CHECK(c.n_models == 2 && !strcmp(c.models[0].name, "turbo") &&
          !strcmp(c.models[0].path, "/m/turbo.safetensors"));
    CHECK(!strcmp(c.models[1].path, "/etc/sdxl/base"));
    static const char *const bad[] = {"{\"port\":70000}",
                                      "{\"port\":\"80\"}",
                                      "{\"colour\":1}",
                                      "{\"models\":{\"../x\":\"p\"}}",
                                      "{\"queue_size\":0}",
                                      "[]",
                                      "{"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = sdxl_http_server_default_config();
        CHECK_MSG(sdxl_http_server_config_parse(bad[i], strlen(bad[i]), NULL, &c, &err) ==
                      SDXL_STATUS_BAD_INPUT,
                  "%s accepted", bad[i]);
        CHECK_MSG(!strncmp(err.msg, "server", 6), "%s: %s", bad[i], err.msg);
    }
}

TEST(http_request_timeout_504) {
    fixture f;
    if (!fx_start(&f, 4, 0)) return;
    resp_t r;
    double t0 = now_s();
    http(f.port, "POST", "/v1/generate",
         "{\"request_id\":\"slow\",\"prompt\":\"x\",\"width\":64,\"height\":64,\"steps\":1000,\"timeout_s\":"
         "0.5,"
         "\"output\":\"base64\"}",
         &r);
    CHECK_EQ_INT(r.status, 504);
    CHECK(now_s() - t0 < 60);
    cJSON *j = json_of(&r);
    CHECK(j && !strcmp(jstr(cJSON_GetObjectItem(j, "error"), "code"), "timeout") &&
          !strcmp(jstr(j, "request_id"), "slow"));
    cJSON_Delete(j);
    resp_free(&r);
    /* the server goes on */
    cJSON_Delete(POST(f.port, "/v1/generate",
                      "{\"prompt\":\"x\",\"width\":64,\"height\":64,\"steps\":2,\"output\":\"base64\"}",
                      200));
    fx_stop(&f);
}
