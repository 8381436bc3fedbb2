/* json.h - small helpers over cJSON shared by the parsers of configs and
 * requests (messages that say what a value is). */
#ifndef SDXL_IO_JSON_H
#define SDXL_IO_JSON_H

#include <cjson/cJSON.h>

/* "nothing" (NULL), "null", "a boolean", "a number", "a string", "a list",
 * "an object": for messages such as "expected a number, got a string". */
const char *sdxl_json_type_name(const cJSON *v);

#endif
