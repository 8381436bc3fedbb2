/* stdio.h - the worker as a child process speaking JSON lines (`sdxl
 * worker`): one request per input line (the request.h schema), answered on
 * the output with lines, each tagged with the request's request_id (one is
 * made up, "req-N", when the request has none):
 *
 *   {"type":"queued","request_id":"r1","position":0}
 *   {"type":"progress","request_id":"r1","round":0,"rounds":1,"step":3,"total":20,"it_per_s":4.2}
 *   {"type":"result", ...the engine's result JSON (engine.h)...}
 *   {"type":"error","request_id":"r1","error":{"code":"invalid_request","message":"steps: ..."}}
 *
 * A malformed line gets an error line (request_id "" when it cannot be
 * read) and the worker goes on; a full queue gets an error with code
 * "queue_full". Requests run one at a time in arrival order while the
 * reader keeps reading. At end of input the worker finishes what was
 * submitted, then returns 0. Output lines are written whole (one lock), so
 * a parent can read them with any line reader. */
#ifndef SDXL_WORKER_STDIO_H
#define SDXL_WORKER_STDIO_H

#include <stdio.h>

#include "worker/engine.h"
#include "worker/queue.h"

typedef struct sdxl_stdio_params {
    size_t max_line;      /* bytes per input line (default 64 MiB: base64 init images) */
    size_t queue_capacity; /* default 64 */
    double timeout_s;     /* per request default (0 = none) */
    int progress_every;   /* progress line every N steps (default 1) */
} sdxl_stdio_params;

sdxl_stdio_params sdxl_stdio_default_params(void);

/* Run until end of `in`; returns the process exit status (0, or 1 when the
 * queue could not start). */
int sdxl_stdio_worker_run(sdxl_engine *e, FILE *in, FILE *out, const sdxl_stdio_params *p);

#endif
