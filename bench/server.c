/* bench/server.c - the HTTP service under load: requests/s and p50/p99
 * latency for small images with 1, 4 and 16 concurrent clients, and
 * LoRA-switching requests against same-set requests. The bound measured in
 * the same run is the engine alone (sdxl_engine_run in-process, no HTTP, no
 * queue): requests/s at 1 client over it is the service's overhead.
 *
 *   sdxl_bench_server [--model DIR] [--loras DIR] [--steps N] [--size S] [--requests N]
 *
 * Defaults: the demo model (64x64), its LoRA folders, 4 steps, 48 requests
 * per level. The server runs in-process on 127.0.0.1 (a free port); the
 * clients are threads with plain sockets, one request per connection,
 * images returned as base64 (the whole response is read). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "worker/engine.h"
#include "worker/http.h"
#include "worker/queue.h"

static int g_port;

/* POST body to /v1/generate; returns the HTTP status, 0 on a socket error. */
static int post(const char *body) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return 0;
    }
    char head[256];
    size_t bl = strlen(body);
    int hl = snprintf(head, sizeof head,
                      "POST /v1/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      bl);
    if (write(fd, head, (size_t)hl) != hl || write(fd, body, bl) != (ssize_t)bl) {
        close(fd);
        return 0;
    }
    char buf[65536];
    ssize_t n, total = 0;
    int status = 0;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        if (total == 0 && n > 12) status = atoi(buf + 9);
        total += n;
    }
    close(fd);
    return status;
}

typedef struct {
    int id, per_client, clients;
    const char *const *bodies;
    int n_bodies;
    double *lat;
    int *ok;
} client_arg;

static void *client(void *p) {
    client_arg *c = p;
    for (int i = 0; i < c->per_client; i++) {
        int k = c->id * c->per_client + i;
        double t0 = sdxl_now_s();
        int st = post(c->bodies[k % c->n_bodies]);
        c->lat[k] = sdxl_now_s() - t0;
        c->ok[k] = st == 200;
    }
    return NULL;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void level(const char *label, int clients, int requests, const char *const *bodies, int n_bodies,
                  double bound_rps) {
    int per = requests / clients;
    int n = per * clients;
    double *lat = calloc((size_t)n, sizeof *lat);
    int *ok = calloc((size_t)n, sizeof *ok);
    pthread_t th[64];
    client_arg args[64];
    double t0 = sdxl_now_s();
    for (int i = 0; i < clients; i++) {
        args[i] = (client_arg){i, per, clients, bodies, n_bodies, lat, ok};
        pthread_create(&th[i], NULL, client, &args[i]);
    }
    for (int i = 0; i < clients; i++) pthread_join(th[i], NULL);
    double wall = sdxl_now_s() - t0;
    int good = 0;
    for (int i = 0; i < n; i++) good += ok[i];
    qsort(lat, (size_t)n, sizeof *lat, cmp_d);
    double rps = good / wall;
    printf("%-28s %2d clients  %3d/%3d ok  %6.2f req/s (%.2fx the engine alone)  p50 %7.1f ms  p99 %7.1f ms\n",
           label, clients, good, n, rps, rps / bound_rps, 1e3 * lat[n / 2], 1e3 * lat[(n * 99) / 100 >= n ? n - 1 : (n * 99) / 100]);
    free(lat);
    free(ok);
}

int main(int argc, char **argv) {
    const char *model = "demo/model", *loras = "demo/loras";
    int steps = 4, size = 64, requests = 48;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--model")) model = argv[i + 1];
        else if (!strcmp(argv[i], "--loras")) loras = argv[i + 1];
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--size")) size = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--requests")) requests = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: sdxl_bench_server [--model DIR] [--loras DIR] [--steps N] [--size S] [--requests N]\n");
            return 2;
        }
    }
    sdxl_error err = {0};
    sdxl_engine_config cfg = sdxl_engine_default_config();
    snprintf(cfg.default_model, sizeof cfg.default_model, "%s", model);
    snprintf(cfg.output_dir, sizeof cfg.output_dir, "/tmp/sdxl-bench-server");
    if (sdxl_lora_worker_config_add_dir(&cfg.lora, loras, NULL, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
    sdxl_engine *e = NULL;
    sdxl_queue *q = NULL;
    sdxl_http_server *srv = NULL;
    sdxl_queue_params qp = sdxl_queue_default_params();
    qp.capacity = 256;
    sdxl_http_params hp = sdxl_http_default_params();
    hp.port = 0;
    hp.quiet = true;
    if (sdxl_engine_create(&cfg, &e, &err) || sdxl_queue_create(e, &qp, &q, &err) ||
        sdxl_http_server_create(e, q, &hp, &srv, &err)) {
        fprintf(stderr, "bench server: %s\n", err.msg);
        return 1;
    }
    g_port = sdxl_http_server_port(srv);
    char plain[512], lora_a[640], lora_b[640];
    snprintf(plain, sizeof plain,
             "{\"prompt\": \"a red circle on a blue background\", \"seed\": 2, \"steps\": %d, \"width\": %d, "
             "\"height\": %d, \"output\": \"base64\"}",
             steps, size, size);
    snprintf(lora_a, sizeof lora_a,
             "{\"prompt\": \"a red circle on a blue background\", \"seed\": 2, \"steps\": %d, \"width\": %d, "
             "\"height\": %d, \"output\": \"base64\", \"lora\": {\"enabled\": true, \"models\": [\"outline_style\"]}}",
             steps, size, size);
    snprintf(lora_b, sizeof lora_b,
             "{\"prompt\": \"a red circle on a blue background\", \"seed\": 2, \"steps\": %d, \"width\": %d, "
             "\"height\": %d, \"output\": \"base64\", \"lora\": {\"enabled\": true, \"models\": [\"smiley_face\", "
             "{\"name\": \"night_lighting\", \"weight\": 0.5}]}}",
             steps, size, size);
    /* the bound: the engine alone, same request, in-process */
    sdxl_request req;
    if (sdxl_request_parse(plain, strlen(plain), NULL, &req, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        sdxl_engine_result res;
        double t0 = sdxl_now_s();
        sdxl_engine_run(e, &req, NULL, &res, &err);
        double t = sdxl_now_s() - t0;
        best = t < best ? t : best;
        sdxl_engine_result_free(&res);
    }
    sdxl_request_free(&req);
    double bound_rps = 1.0 / best;
    printf("model %s, %dx%d, %d steps; engine alone %.1f ms/request (%.2f req/s)\n", model, size, size, steps,
           1e3 * best, bound_rps);
    const char *same[] = {plain};
    for (int c = 1; c <= 16; c *= 4) level("no LoRA", c, requests, same, 1, bound_rps);
    const char *same_set[] = {lora_a};
    level("same LoRA set", 4, requests, same_set, 1, bound_rps);
    const char *switching[] = {lora_a, lora_b};
    level("LoRA set switching each req", 4, requests, switching, 2, bound_rps);
    sdxl_http_server_free(srv);
    sdxl_queue_free(q);
    sdxl_engine_free(e);
    return 0;
}
