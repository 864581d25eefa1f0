/* A small JSON reader (RFC 8259) for the headers of safetensors files.
 *
 * Internal to the ir module.  The document becomes a tree allocated in a
 * caller's arena, freed with it at once.  Input is never trusted: it need
 * not be NUL-terminated, nesting depth is bounded, strings are checked to
 * be UTF-8, and every error says what was expected and at which byte.
 */
#ifndef NTC_IR_JSON_H
#define NTC_IR_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ntc/util.h"

typedef enum {
    NTC_JSON_NULL,
    NTC_JSON_BOOL,
    NTC_JSON_NUMBER,
    NTC_JSON_STRING,
    NTC_JSON_ARRAY,
    NTC_JSON_OBJECT,
} ntc_json_type;

typedef struct ntc_json {
    ntc_json_type type;
    bool boolean;                /* NTC_JSON_BOOL */
    double number;               /* NTC_JSON_NUMBER */
    bool is_uint;                /* number is an integer in [0, 2^64) written without fraction or exponent */
    uint64_t uint;               /* its exact value when is_uint */
    const char *string;          /* NTC_JSON_STRING: decoded UTF-8, NUL-terminated, no NUL inside */
    int n;                       /* NTC_JSON_ARRAY / NTC_JSON_OBJECT: element count */
    struct ntc_json *first;      /* first element, in document order */
    struct ntc_json *next;       /* next sibling */
    const char *key;             /* member name inside an object, else NULL */
    size_t offset;               /* byte offset of the value in the text */
} ntc_json;

/* Why a parse failed: a message and the byte offset where it was noticed. */
typedef struct {
    char msg[160];
    size_t offset;
    bool out_of_memory;          /* the text may be fine; memory ran out */
} ntc_json_error;

/* Parses exactly one JSON value from text[0..len), surrounded by optional
 * whitespace.  Returns the root, or NULL with *e filled (bad syntax, nesting
 * deeper than 128, a string holding \u0000, or out of memory). */
ntc_json *ntc_json_parse(ntc_arena *a, const char *text, size_t len, ntc_json_error *e);

/* The member named key of an object, or NULL (the first one if repeated). */
const ntc_json *ntc_json_get(const ntc_json *obj, const char *key);

/* "object", "array", ... for error messages. */
const char *ntc_json_type_name(ntc_json_type t);

#endif
