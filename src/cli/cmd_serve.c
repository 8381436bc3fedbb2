/* cmd_serve.c - `sdxl serve`: the HTTP server (worker/http.h): the native
 * API under /v1 and A1111's /sdapi/v1 subset, on port 7860 by default.
 *
 *   sdxl serve --model PATH [--config WORKER.json] [--host 127.0.0.1] [--port 7860]
 *              [--lora-dir DIR]... [--output-dir DIR] [--queue N] [--timeout S]
 *              [--threads N] [--io-threads N] [--max-body-mb MB] [--connection-timeout S]
 *              [--read-timeout S] [--memory-budget MB] [--no-a1111]
 *
 * The config file holds the worker's "lora_config" and an optional "server"
 * block (http.h: host, port, threads, queue_size, max_body_mb, timeout_s,
 * connection_timeout_s, request_read_timeout_s, max_connections,
 * max_connections_per_ip, retry_after_s, output_dir, model, models,
 * model_memory_mb, compute_threads, a1111); options on the command line
 * win over it. --port 0 picks a free port. Once serving, one line goes to
 * stderr: "listening on http://HOST:PORT". SIGTERM / SIGINT: stop accepting,
 * cancel what is queued, finish the running job and answer its client,
 * exit 0.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <cjson/cJSON.h>

#include "cli/commands.h"
#include "core/alloc.h"
#include "io/file.h"
#include "worker/engine.h"
#include "worker/http.h"
#include "worker/queue.h"
#include "worker/request.h"

static void usage(FILE *f) {
    fprintf(
        f, "usage: sdxl serve --model PATH [--config WORKER.json] [--host 127.0.0.1] [--port 7860]\n"
           "                  [--lora-dir DIR]... [--output-dir DIR] [--queue N] [--timeout S]\n"
           "                  [--threads N] [--io-threads N] [--max-body-mb MB] [--connection-timeout S]\n"
           "                  [--read-timeout S] [--memory-budget MB] [--no-a1111]\n"
           "  serves POST /v1/generate, GET /v1/loras, POST /v1/loras/refresh, GET /v1/health, GET /metrics\n"
           "  and A1111's /sdapi/v1 (txt2img, img2img, progress, interrupt, loras, samplers, sd-models, "
           "options)\n"
           "  --threads: compute threads (0 = one per CPU); --io-threads: HTTP threads (4)\n"
           "  --port 0 picks a free port; SIGTERM finishes the running job and exits 0\n");
}

/* The config file: "server" to *sc, the rest (lora_config) to *lora. */
static bool read_config(const char *path, sdxl_http_server_config *sc, sdxl_lora_worker_config *lora) {
    char *json = NULL;
    size_t len = 0;
    sdxl_error err = {0};
    if (sdxl_read_file(path, 1 << 20, &json, &len, &err)) {
        fprintf(stderr, "serve: config: %s\n", err.msg);
        return false;
    }
    char base[4096];
    snprintf(base, sizeof base, "%s", path);
    char *slash = strrchr(base, '/');
    if (slash)
        *slash = 0;
    else
        snprintf(base, sizeof base, ".");
    cJSON *root = cJSON_ParseWithLength(json, len);
    sdxl_free(json);
    if (!root || !cJSON_IsObject(root)) {
        fprintf(stderr, "serve: config %s: not a JSON object\n", path);
        cJSON_Delete(root);
        return false;
    }
    bool ok = true;
    cJSON *server = cJSON_DetachItemFromObjectCaseSensitive(root, "server");
    if (server) {
        char *t = cJSON_PrintUnformatted(server);
        if (!t || sdxl_http_server_config_parse(t, strlen(t), base, sc, &err)) {
            fprintf(stderr, "serve: config %s: %s\n", path, t ? err.msg : "out of memory");
            ok = false;
        }
        free(t);
        cJSON_Delete(server);
    }
    if (ok) {
        char *t = cJSON_PrintUnformatted(root);
        if (!t || sdxl_worker_config_parse(t, strlen(t), base, lora, &err)) {
            fprintf(stderr, "serve: config %s: %s\n", path, t ? err.msg : "out of memory");
            ok = false;
        }
        free(t);
    }
    cJSON_Delete(root);
    return ok;
}

int sdxl_cmd_serve(int argc, char **argv) {
    static const struct option opts[] = {{"model", 1, 0, 'm'},
                                         {"config", 1, 0, 'C'},
                                         {"host", 1, 0, 'H'},
                                         {"port", 1, 0, 'p'},
                                         {"lora-dir", 1, 0, 'D'},
                                         {"output-dir", 1, 0, 'o'},
                                         {"queue", 1, 0, 'q'},
                                         {"timeout", 1, 0, 't'},
                                         {"threads", 1, 0, 'T'},
                                         {"io-threads", 1, 0, 'I'},
                                         {"max-body-mb", 1, 0, 'B'},
                                         {"connection-timeout", 1, 0, 'c'},
                                         {"read-timeout", 1, 0, 'r'},
                                         {"memory-budget", 1, 0, 'M'},
                                         {"no-a1111", 0, 0, 'N'},
                                         {"help", 0, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *model = NULL, *config = NULL, *host = NULL, *outdir = NULL, *dirs[SDXL_LORA_WORKER_MAX_DIRS];
    int nd = 0, ch;
    long port = -1, queue = -1, threads = -1, io_threads = -1, conn_to = -1, read_to = -1;
    double timeout = -1, body_mb = -1, budget_mb = 0;
    bool no_a1111 = false;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "m:p:h", opts, NULL)) != -1) {
        char *end = NULL;
        switch (ch) {
        case 'm': model = optarg; break;
        case 'C': config = optarg; break;
        case 'H': host = optarg; break;
        case 'p': port = strtol(optarg, &end, 10); break;
        case 'D':
            if (nd == SDXL_LORA_WORKER_MAX_DIRS) return fprintf(stderr, "serve: too many --lora-dir\n"), 2;
            dirs[nd++] = optarg;
            break;
        case 'o': outdir = optarg; break;
        case 'q': queue = strtol(optarg, &end, 10); break;
        case 't': timeout = strtod(optarg, &end); break;
        case 'T': threads = strtol(optarg, &end, 10); break;
        case 'I': io_threads = strtol(optarg, &end, 10); break;
        case 'B': body_mb = strtod(optarg, &end); break;
        case 'c': conn_to = strtol(optarg, &end, 10); break;
        case 'r': read_to = strtol(optarg, &end, 10); break;
        case 'M': budget_mb = strtod(optarg, &end); break;
        case 'N': no_a1111 = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (end && (*end || end == optarg))
            return fprintf(stderr, "serve: '%s' is not a number\n", optarg), 2;
    }
    if (optind < argc)
        return fprintf(stderr, "serve: unexpected argument '%s'\n", argv[optind]), usage(stderr), 2;
    if ((port != -1 && (port < 0 || port > 65535)) || (queue != -1 && (queue < 1 || queue > 100000)) ||
        (threads != -1 && (threads < 0 || threads > 1024)) ||
        (io_threads != -1 && (io_threads < 1 || io_threads > 64)) ||
        (body_mb != -1 && (body_mb < 0.001 || body_mb > 4096)) ||
        (conn_to != -1 && (conn_to < 1 || conn_to > 3600)) ||
        (read_to != -1 && (read_to < 0 || read_to > 86400)) ||
        (timeout != -1 && (timeout < 0 || timeout > 86400)) || budget_mb < 0)
        return fprintf(stderr, "serve: an option is out of range (see --help)\n"), 2;

    sdxl_http_server_config sc = sdxl_http_server_default_config();
    sdxl_engine_config cfg = sdxl_engine_default_config();
    if (config && !read_config(config, &sc, &cfg.lora)) return 2;
    sdxl_error err = {0};
    for (int i = 0; i < nd; i++)
        if (sdxl_lora_worker_config_add_dir(&cfg.lora, dirs[i], NULL, &err))
            return fprintf(stderr, "serve: --lora-dir %s: %s\n", dirs[i], err.msg), 2;
    if (host) snprintf(sc.http.host, sizeof sc.http.host, "%s", host);
    if (port != -1) sc.http.port = (int)port;
    if (queue != -1) sc.queue_size = (size_t)queue;
    if (timeout != -1) sc.timeout_s = timeout;
    if (io_threads != -1) sc.http.threads = (int)io_threads;
    if (body_mb != -1) sc.http.max_body_bytes = (size_t)(body_mb * 1048576.0);
    if (conn_to != -1) sc.http.connection_timeout_s = (int)conn_to;
    if (read_to != -1) sc.http.request_read_timeout_s = (int)read_to;
    if (no_a1111) sc.http.enable_a1111 = false;
    if (!model) model = sc.has_model ? sc.model : "demo/model";
    snprintf(cfg.default_model, sizeof cfg.default_model, "%s", model);
    if (outdir)
        snprintf(cfg.output_dir, sizeof cfg.output_dir, "%s", outdir);
    else if (sc.has_output_dir)
        snprintf(cfg.output_dir, sizeof cfg.output_dir, "%s", sc.output_dir);
    memcpy(cfg.models, sc.models, sizeof cfg.models);
    cfg.n_models = sc.n_models;
    cfg.model_memory_mb = sc.model_memory_mb;
    cfg.threads = threads != -1 ? (int)threads : sc.compute_threads;
    cfg.memory_budget = (size_t)(budget_mb * 1048576.0);

    /* every thread started from here on inherits the blocked signals; this
     * one takes them with sigwait */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* room for the connections (and the model files, sockets of the loop) */
    struct rlimit rl;
    rlim_t want = (rlim_t)sc.http.max_connections + 256;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    sdxl_engine *e = NULL;
    if (sdxl_engine_create(&cfg, &e, &err)) {
        fprintf(stderr, "serve: %s\n", err.msg);
        return 1;
    }
    sdxl_queue_params qp = sdxl_queue_default_params();
    qp.capacity = sc.queue_size;
    qp.default_timeout_s = sc.timeout_s;
    sdxl_queue *q = NULL;
    if (sdxl_queue_create(e, &qp, &q, &err)) {
        fprintf(stderr, "serve: %s\n", err.msg);
        sdxl_engine_free(e);
        return 1;
    }
    sdxl_http_server *srv = NULL;
    if (sdxl_http_server_create(e, q, &sc.http, &srv, &err)) {
        fprintf(stderr, "serve: %s\n", err.msg);
        sdxl_queue_free(q);
        sdxl_engine_free(e);
        return 1;
    }
    bool v6 = strchr(sc.http.host, ':') != NULL;
    fprintf(stderr, "serve: model %s; queue %zu; output %s\n", sdxl_engine_default_model_name(e),
            sc.queue_size, cfg.output_dir);
    fprintf(stderr, "listening on http://%s%s%s:%d\n", v6 ? "[" : "", sc.http.host, v6 ? "]" : "",
            sdxl_http_server_port(srv));
    fflush(stderr);

    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    fprintf(stderr, "serve: %s: stopping (finishing the running job)\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT");
    sdxl_http_server_shutdown(srv);
    sdxl_http_server_free(srv);
    sdxl_queue_free(q);
    sdxl_engine_free(e);
    fprintf(stderr, "serve: stopped\n");
    return 0;
}
