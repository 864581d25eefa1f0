/* The safetensors weights sidecar: round trips, files written by hand to the
 * format's spec, every kind of bad file, mapping lifetime, and random
 * corruption.  Also the small JSON reader behind the header. */
#include "testutil.h"
#include "ir/json.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ---------------------------------------------------------------- */

static int add(ntc_graph *g, ntc_op op, const char *name, int in)
{
    int n = ntc_graph_add_node(g, op, name, &in, 1, -1);
    ck_assert_int_ge(n, 0);
    return n;
}

/* x [N,3,8,8] -> conv(4, k3, p1, bias) -> bn -> gap -> flatten -> linear(5):
 * eight parameters of ranks 1, 2 and 4. */
static ntc_graph *net(bool infer)
{
    ntc_graph *g = ntc_graph_new("net");
    ntc_shape s;
    ck_assert_int_eq(ntc_shape_parse("N,3,8,8", &s), 0);
    int c = add(g, NTC_OP_conv2d, "conv", ntc_graph_add_input(g, "x", &s));
    g->nodes[c].a.filters = 4;
    g->nodes[c].a.kernel[0] = g->nodes[c].a.kernel[1] = 3;
    for (int i = 0; i < 4; i++)
        g->nodes[c].a.pad[i] = 1;
    ntc_node_add_param(g, c, "weight", NULL);
    ntc_node_add_param(g, c, "bias", NULL);
    int bn = add(g, NTC_OP_batchnorm, "bn", g->nodes[c].out);
    const char *slots[] = {"scale", "bias", "mean", "var"};
    for (int i = 0; i < 4; i++)
        ntc_node_add_param(g, bn, slots[i], NULL);
    int gap = add(g, NTC_OP_global_avgpool, "gap", g->nodes[bn].out);
    int fl = add(g, NTC_OP_flatten, "flat", g->nodes[gap].out);
    int fc = add(g, NTC_OP_linear, "fc", g->nodes[fl].out);
    g->nodes[fc].a.units = 5;
    ntc_node_add_param(g, fc, "weight", NULL);
    ntc_node_add_param(g, fc, "bias", NULL);
    ntc_graph_add_output(g, "logits", g->nodes[fc].out);
    ntc_err err = {0};
    if (infer)
        ck_assert_msg(ntc_graph_infer_shapes(g, &err) == 0, "%s", ntc_err_str(&err));
    return g;
}

/* x [N,1,4,4] -> conv(2, k1, bias): conv.weight [2,1,1,1] and conv.bias [2],
 * small enough for headers written by hand. */
static ntc_graph *tiny(void)
{
    ntc_graph *g = ntc_graph_new("tiny");
    ntc_shape s;
    ck_assert_int_eq(ntc_shape_parse("N,1,4,4", &s), 0);
    int c = add(g, NTC_OP_conv2d, "conv", ntc_graph_add_input(g, "x", &s));
    g->nodes[c].a.filters = 2;
    g->nodes[c].a.kernel[0] = g->nodes[c].a.kernel[1] = 1;
    ntc_node_add_param(g, c, "weight", NULL);
    ntc_node_add_param(g, c, "bias", NULL);
    ntc_graph_add_output(g, "y", g->nodes[c].out);
    ntc_err err = {0};
    ck_assert_msg(ntc_graph_infer_shapes(g, &err) == 0, "%s", ntc_err_str(&err));
    return g;
}

static ntc_value *param(ntc_graph *g, const char *name)
{
    int v = ntc_graph_find_value(g, name);
    ck_assert_int_ge(v, 0);
    return &g->values[v];
}

/* Gives every parameter owned, pseudo-random data. */
static void fill(ntc_graph *g, unsigned seed)
{
    for (int v = 0; v < g->n_values; v++) {
        ntc_value *pv = &g->values[v];
        if (pv->kind != NTC_VAL_PARAM)
            continue;
        int64_t n = ntc_shape_numel(&pv->shape);
        if (pv->owned)
            ntc_free(pv->data);
        pv->data = ntc_malloc(sizeof(float) * (size_t)n);
        pv->owned = true;
        for (int64_t i = 0; i < n; i++)
            pv->data[i] = tu_randf(&seed);
    }
}

static void write_bytes(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n ? *n : 1);
    ck_assert_uint_eq(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

/* A safetensors file as the spec lays it out: the header's length as 8
 * little-endian bytes, the header, the data section. */
static void write_st(const char *path, const char *header, const void *data, size_t n)
{
    size_t h = strlen(header);
    unsigned char *b = malloc(8 + h + n + 1);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(b + 8, header, h);
    if (n)
        memcpy(b + 8 + h, data, n);
    write_bytes(path, b, 8 + h + n);
    free(b);
}

static char *in_dir(const char *dir, const char *name)
{
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

/* Mappings of path in this process (lines of /proc/self/maps); the address
 * range of the last one goes to lo/hi. */
static int mappings_of(const char *path, uintptr_t *lo, uintptr_t *hi)
{
    FILE *f = fopen("/proc/self/maps", "r");
    ck_assert_ptr_nonnull(f);
    char line[1024];
    int count = 0;
    while (fgets(line, sizeof line, f)) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        size_t ll = strlen(line), pl = strlen(path);
        if (ll < pl || strcmp(line + ll - pl, path) != 0 || line[ll - pl - 1] != ' ')
            continue;
        unsigned long a, b;
        ck_assert_int_eq(sscanf(line, "%lx-%lx", &a, &b), 2);
        if (lo)
            *lo = a, *hi = b;
        count++;
    }
    fclose(f);
    return count;
}

static void expect_error(ntc_graph *g, const char *path, const char *substring)
{
    ntc_err err = {0};
    ck_assert_int_eq(ntc_weights_load(g, path, &err), -1);
    ck_assert_msg(strstr(err.msg, substring), "error '%s' lacks '%s'", ntc_err_str(&err), substring);
    ck_assert_str_eq(err.file, path);
    ck_assert_int_eq(mappings_of(path, NULL, NULL), 0);
}

/* Counts live allocations made through the library's allocator. */
static long live_allocs;

static void *counting_alloc(void *ptr, size_t size, void *ud)
{
    (void)ud;
    if (size == 0) {
        live_allocs -= ptr != NULL;
        free(ptr);
        return NULL;
    }
    void *p = realloc(ptr, size);
    live_allocs += p && !ptr;
    return p;
}

/* The same, failing the allocation numbered fail_at (counting from 1). */
static long alloc_calls, fail_at;

static void *failing_alloc(void *ptr, size_t size, void *ud)
{
    if (size != 0 && ++alloc_calls == fail_at)
        return NULL;
    return counting_alloc(ptr, size, ud);
}

/* ---- round trips --------------------------------------------------------------- */

START_TEST(round_trip_bit_identical)
{
    const char *dir = tu_tmpdir();
    char *path = in_dir(dir, "w.safetensors");
    ntc_graph *src = net(true);
    fill(src, 7);
    /* Values a lossy path would change. */
    float *w = param(src, "conv.weight")->data;
    w[0] = NAN, w[1] = -0.0f, w[2] = INFINITY, w[3] = 1e-45f, w[4] = -3.4028235e38f;
    ntc_err err = {0};
    ck_assert_msg(ntc_weights_save(src, path, &err) == 0, "%s", ntc_err_str(&err));

    ntc_graph *dst = net(true);
    ck_assert_msg(ntc_weights_load(dst, path, &err) == 0, "%s", ntc_err_str(&err));
    uintptr_t lo, hi;
    ck_assert_int_eq(mappings_of(path, &lo, &hi), 1);
    int params = 0;
    for (int v = 0; v < src->n_values; v++) {
        ntc_value *a = &src->values[v], *b = &dst->values[v];
        if (a->kind != NTC_VAL_PARAM)
            continue;
        params++;
        size_t bytes = sizeof(float) * (size_t)ntc_shape_numel(&a->shape);
        ck_assert_msg(memcmp(a->data, b->data, bytes) == 0, "%s differs", a->name);
        ck_assert(!b->owned);
        ck_assert_uint_ge((uintptr_t)b->data, lo);
        ck_assert_uint_le((uintptr_t)b->data + bytes, hi);
        ck_assert_uint_eq((uintptr_t)b->data % sizeof(float), 0);
    }
    ck_assert_int_eq(params, 8);
    ck_assert_msg(ntc_graph_verify(dst, &err) == 0, "%s", ntc_err_str(&err));

    /* Copy-on-write: writing a parameter changes the process's copy only. */
    param(dst, "fc.bias")->data[0] = 42.0f;
    ntc_graph *again = net(true);
    ck_assert_int_eq(ntc_weights_load(again, path, &err), 0);
    ck_assert(memcmp(param(again, "fc.bias")->data, param(src, "fc.bias")->data, sizeof(float)) == 0);

    /* Saving a loaded graph gives the same bytes: sorted names, no state. */
    char *path2 = in_dir(dir, "w2.safetensors");
    param(dst, "fc.bias")->data[0] = param(src, "fc.bias")->data[0];
    ck_assert_int_eq(ntc_weights_save(dst, path2, &err), 0);
    size_t n1, n2;
    unsigned char *b1 = read_bytes(path, &n1), *b2 = read_bytes(path2, &n2);
    ck_assert_uint_eq(n1, n2);
    ck_assert(memcmp(b1, b2, n1) == 0);
    free(b1);
    free(b2);
    ntc_graph_free(src);
    ntc_graph_free(dst);
    ntc_graph_free(again);
}
END_TEST

/* What the saver writes, read back byte by byte against the spec. */
START_TEST(saved_layout_follows_spec)
{
    const char *dir = tu_tmpdir();
    char *path = in_dir(dir, "w.safetensors");
    ntc_graph *g = net(true);
    fill(g, 3);
    /* A parameter without data is not written. */
    ntc_value *fcb = param(g, "fc.bias");
    ntc_free(fcb->data);
    fcb->data = NULL;
    fcb->owned = false;
    ntc_err err = {0};
    ck_assert_int_eq(ntc_weights_save(g, path, &err), 0);
    size_t n;
    unsigned char *b = read_bytes(path, &n);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--)
        h = h << 8 | b[i];
    ck_assert_uint_eq(h % 8, 0);
    ck_assert_uint_le(8 + h, n);
    ck_assert_int_eq(b[8], '{');
    char *hdr = strndup((char *)b + 8, h);
    ck_assert_msg(strstr(hdr, "\"__metadata__\":{\"ntc-ir-version\":\"1\"}"), "%s", hdr);
    ck_assert_ptr_null(strstr(hdr, "fc.bias"));
    /* Names sorted; the data section tiled in that order from offset 0. */
    const char *order[] = {"bn.bias", "bn.mean", "bn.scale", "bn.var", "conv.bias", "conv.weight", "fc.weight"};
    uint64_t expect_begin = 0;
    const char *prev = hdr;
    for (int i = 0; i < 7; i++) {
        char key[64];
        snprintf(key, sizeof key, "\"%s\":{\"dtype\":\"F32\",\"shape\":[", order[i]);
        const char *at = strstr(hdr, key);
        ck_assert_msg(at && at > prev, "%s missing or out of order in %s", order[i], hdr);
        prev = at;
        const char *offs = strstr(at, "\"data_offsets\":[");
        unsigned long long begin, end;
        ck_assert_int_eq(sscanf(offs, "\"data_offsets\":[%llu,%llu]", &begin, &end), 2);
        ck_assert_uint_eq(begin, expect_begin);
        ntc_value *pv = param(g, order[i]);
        ck_assert_uint_eq(end - begin, sizeof(float) * (size_t)ntc_shape_numel(&pv->shape));
        ck_assert(memcmp(b + 8 + h + begin, pv->data, end - begin) == 0);
        expect_begin = end;
    }
    ck_assert_uint_eq(8 + h + expect_begin, n);
    /* Padding is spaces after the closing brace. */
    char *close = strrchr(hdr, '}');
    for (char *c = close + 1; *c; c++)
        ck_assert_int_eq(*c, ' ');
    ck_assert(strstr(hdr, "\"conv.weight\":{\"dtype\":\"F32\",\"shape\":[4,3,3,3]"));
    free(hdr);
    free(b);
    ntc_graph_free(g);
}
END_TEST

START_TEST(save_needs_shapes)
{
    ntc_graph *g = net(false);
    ntc_value *w = param(g, "conv.weight");
    w->data = ntc_calloc(108, sizeof(float));
    w->owned = true;
    ntc_err err = {0};
    char *path = in_dir(tu_tmpdir(), "w.safetensors");
    ck_assert_int_eq(ntc_weights_save(g, path, &err), -1);
    ck_assert_msg(strstr(err.msg, "'conv.weight' has data but no known shape"), "%s", err.msg);
    ck_assert_int_eq(ntc_weights_save(g, "/nonexistent-dir/w.safetensors", &err), -1);
    ntc_graph_free(g);
}
END_TEST

/* ---- files written by hand ---------------------------------------------------- */

static const float tiny_data[] = {1.5f, -2.0f, 0.25f, 8.0f, 99.0f, 99.0f};

START_TEST(hand_written_file_loads)
{
    char *path = in_dir(tu_tmpdir(), "hand.safetensors");
    /* Keys in any order, whitespace, metadata as PyTorch's writer puts it, an
     * escaped character in a name, a tensor of another dtype the graph does
     * not use, and space padding up to the data. */
    const char *header =
        "{\n  \"__metadata__\": {\"format\": \"pt\"},\n"
        "  \"conv.bias\": {\"shape\": [2], \"dtype\": \"F32\", \"data_offsets\": [8, 16]},\n"
        "  \"unused\": {\"dtype\": \"I32\", \"shape\": [2], \"data_offsets\": [16, 24]},\n"
        "  \"conv.w\\u0065ight\": {\"dtype\": \"F32\", \"shape\": [2, 1, 1, 1], \"data_offsets\": [0, 8]}\n"
        "}";
    char padded[1024];
    snprintf(padded, sizeof padded, "%s", header);
    while (strlen(padded) % 8)
        strcat(padded, " ");
    write_st(path, padded, tiny_data, sizeof tiny_data);
    ntc_graph *g = tiny();
    ntc_err err = {0};
    ck_assert_msg(ntc_weights_load(g, path, &err) == 0, "%s", ntc_err_str(&err));
    const float *w = param(g, "conv.weight")->data, *b = param(g, "conv.bias")->data;
    ck_assert(w[0] == 1.5f && w[1] == -2.0f);
    ck_assert(b[0] == 0.25f && b[1] == 8.0f);
    ck_assert(!param(g, "conv.weight")->owned);
    ntc_graph_free(g);
}
END_TEST

/* A header whose length is not a multiple of 4 leaves the data misaligned
 * for floats: those tensors are copied, and the copies are freed. */
START_TEST(misaligned_data_is_copied)
{
    char *path = in_dir(tu_tmpdir(), "odd.safetensors");
    write_st(path,
             "{\"conv.weight\":{\"dtype\":\"F32\",\"shape\":[2,1,1,1],\"data_offsets\":[0,8]},"
             "\"conv.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}  ",
             tiny_data, 16);
    size_t n;
    free(read_bytes(path, &n));
    ck_assert_uint_ne((n - 16) % 4, 0);
    ntc_set_allocator(counting_alloc, NULL);
    live_allocs = 0;
    ntc_graph *g = tiny();
    ntc_err err = {0};
    ck_assert_msg(ntc_weights_load(g, path, &err) == 0, "%s", ntc_err_str(&err));
    ntc_value *w = param(g, "conv.weight");
    ck_assert(w->owned);
    ck_assert_uint_eq((uintptr_t)w->data % sizeof(float), 0);
    ck_assert(w->data[0] == 1.5f && w->data[1] == -2.0f);
    ck_assert(param(g, "conv.bias")->data[1] == 8.0f);
    ntc_graph_free(g);
    ck_assert_int_eq(live_allocs, 0);
    ntc_set_allocator(NULL, NULL);
}
END_TEST

/* Without inferred shapes a parameter takes the file's; the shape inference
 * then judges it. */
START_TEST(unknown_shapes_are_adopted)
{
    const char *dir = tu_tmpdir();
    char *path = in_dir(dir, "w.safetensors");
    ntc_graph *src = net(true);
    fill(src, 11);
    ntc_err err = {0};
    ck_assert_int_eq(ntc_weights_save(src, path, &err), 0);
    ntc_graph *g = net(false);
    ck_assert_int_eq(param(g, "conv.weight")->shape.rank, 0);
    ck_assert_msg(ntc_weights_load(g, path, &err) == 0, "%s", ntc_err_str(&err));
    char buf[64];
    ntc_shape_format(&param(g, "conv.weight")->shape, buf, sizeof buf);
    ck_assert_str_eq(buf, "4,3,3,3");
    ck_assert_msg(ntc_graph_infer_shapes(g, &err) == 0, "%s", ntc_err_str(&err));
    ntc_graph_free(g);

    /* A graph with 2 input channels needs [4,2,3,3]: inference rejects it. */
    g = ntc_graph_new("two");
    ntc_shape s;
    ntc_shape_parse("N,2,8,8", &s);
    int c = add(g, NTC_OP_conv2d, "conv", ntc_graph_add_input(g, "x", &s));
    g->nodes[c].a.filters = 4;
    g->nodes[c].a.kernel[0] = g->nodes[c].a.kernel[1] = 3;
    ntc_node_add_param(g, c, "weight", NULL);
    ck_assert_msg(ntc_weights_load(g, path, &err) == 0, "%s", ntc_err_str(&err));
    ck_assert_int_eq(ntc_graph_infer_shapes(g, &err), -1);
    ck_assert_msg(strstr(err.msg, "parameter 'conv.weight' has shape [4,3,3,3]"), "%s", err.msg);
    ntc_graph_free(g);
    ntc_graph_free(src);
}
END_TEST

/* ---- bad files ---------------------------------------------------------------- */

#define W "\"conv.weight\":{\"dtype\":\"F32\",\"shape\":[2,1,1,1],\"data_offsets\":[0,8]}"
#define B "\"conv.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}"

static const struct {
    const char *header;
    const char *error;
} bad_headers[] = {
    /* not JSON */
    {"", "header is not valid JSON: expected a value, found the end of the text (header byte 0)"},
    {"{" W "," B, "not valid JSON: expected ',' or '}' in an object"},
    {"{" W "," B "}x", "not valid JSON: unexpected 'x' after the JSON value"},
    {"{" W ",}", "not valid JSON: expected a member name in quotes"},
    {"{\"conv.weight\":{\"dtype\":F32}}", "not valid JSON: expected a value, found 'F'"},
    {"{\"conv.we\xffght\":{}}", "not valid JSON: invalid UTF-8 inside a string"},
    {"{\"a\\u0000\":{}}", "\\u0000 inside a string is not supported"},
    {"{\"a\\ud800\":{}}", "unpaired UTF-16 surrogate"},
    {"{\"a\":[01]}", "not valid JSON: expected ',' or ']' in an array, found '1'"},
    /* JSON, but not a safetensors header */
    {"[" W "]", "not valid JSON: expected ',' or ']' in an array, found ':'"},
    {"[1,2]", "header is not a JSON object but array"},
    {"{\"conv.weight\":3," B "}", "tensor 'conv.weight': expected an object in the header, found number"},
    {"{\"conv.weight\":{\"dtype\":1,\"shape\":[2,1,1,1],\"data_offsets\":[0,8]}," B "}",
     "tensor 'conv.weight': \"dtype\" must be a string"},
    {"{\"conv.weight\":{\"dtype\":\"F32\",\"shape\":[2,-1,1,1],\"data_offsets\":[0,8]}," B "}",
     "tensor 'conv.weight': \"shape\" must hold integers >= 0"},
    {"{\"conv.weight\":{\"dtype\":\"F32\",\"shape\":[2,1.0,1,1],\"data_offsets\":[0,8]}," B "}",
     "\"shape\" must hold integers >= 0"},
    {"{\"conv.weight\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}," B "}", "\"shape\" must be an array"},
    {"{\"conv.weight\":{\"dtype\":\"F32\",\"shape\":[2,1,1,1],\"data_offsets\":[0]}," B "}",
     "\"data_offsets\" must be [begin, end]"},
    {"{\"__metadata__\":{\"format\":1}," W "," B "}", "\"__metadata__\" must be an object of strings"},
    {"{" W "," W "," B "}", "tensor 'conv.weight' appears twice"},
    /* wrong dtypes for a parameter; sizes consistent */
    {"{\"conv.weight\":{\"dtype\":\"F16\",\"shape\":[2,1,1,1],\"data_offsets\":[0,4]}," B "}",
     "parameter 'conv.weight' has dtype F16 in the file, ntc needs F32"},
    {"{" W ",\"conv.bias\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[8,24]}}",
     "parameter 'conv.bias' has dtype I64 in the file, ntc needs F32"},
    {"{" W ",\"conv.bias\":{\"dtype\":\"F4_NEW\",\"shape\":[2],\"data_offsets\":[8,9]}}",
     "parameter 'conv.bias' has dtype F4_NEW in the file"},
    /* shape against offsets */
    {"{\"conv.weight\":{\"dtype\":\"F32\",\"shape\":[2,1,1,1],\"data_offsets\":[0,7]}," B "}",
     "tensor 'conv.weight': shape [2,1,1,1] of F32 needs 8 bytes, data_offsets [0,7] hold 7"},
    {"{" W ",\"conv.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[8,16]}}",
     "tensor 'conv.bias': shape [3] of F32 needs 12 bytes"},
    {"{" W ",\"big\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[16,16]}," B "}",
     "tensor 'big': shape [4294967296,4294967296] of F64 needs more than"},
    /* offsets against the data section and each other */
    {"{" W ",\"conv.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     "tensors 'conv.weight' [0,8] and 'conv.bias' [4,12] overlap"},
    {"{" W ",\"conv.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "overlap"},
    {"{" W "," B ",\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}",
     "tensors 'conv.weight' [0,8] and 'e' [4,4] overlap"},
    {"{" W ",\"conv.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[20,28]}}",
     "tensor 'conv.bias': data_offsets [20,28] lie outside the data section (24 bytes)"},
    {"{" W ",\"conv.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[18446744073709551615,7]}}",
     "end before they begin"},
    {"{" W ",\"conv.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,18446744073709551616]}}",
     "\"data_offsets\" must be [begin, end], two integers >= 0"},
    /* the graph against the file */
    {"{" W "}", "parameter 'conv.bias' is missing from the file"},
    {"{\"conv.weight\":{\"dtype\":\"F32\",\"shape\":[1,2,1,1],\"data_offsets\":[0,8]}," B "}",
     "parameter 'conv.weight' is [1,2,1,1] in the file, the graph needs [2,1,1,1]"},
    {"{\"conv.weight\":{\"dtype\":\"F32\",\"shape\":[2,1,1],\"data_offsets\":[0,8]}," B "}",
     "parameter 'conv.weight' is [2,1,1] in the file, the graph needs [2,1,1,1]"},
};

/* Each bad header fails with its message, and leaves the graph's earlier
 * weights in place. */
START_TEST(bad_header)
{
    const char *dir = tu_tmpdir();
    char *good = in_dir(dir, "good.safetensors"), *bad = in_dir(dir, "bad.safetensors");
    write_st(good, "{" W "," B "}", tiny_data, sizeof tiny_data);
    float data[6];
    memcpy(data, tiny_data, sizeof data);
    write_st(bad, bad_headers[_i].header, data, sizeof data);
    ntc_graph *g = tiny();
    ntc_err err = {0};
    ck_assert_msg(ntc_weights_load(g, good, &err) == 0, "%s", ntc_err_str(&err));
    float *before = param(g, "conv.weight")->data;
    expect_error(g, bad, bad_headers[_i].error);
    ck_assert_ptr_eq(param(g, "conv.weight")->data, before);
    ck_assert(param(g, "conv.bias")->data[0] == 0.25f);
    ck_assert_int_eq(mappings_of(good, NULL, NULL), 1);
    ntc_graph_free(g);
}
END_TEST

START_TEST(missing_file)
{
    ntc_graph *g = tiny();
    const char *dir = tu_tmpdir();
    expect_error(g, in_dir(dir, "nope.safetensors"), "cannot open weights: No such file or directory");
    expect_error(g, dir, "not a regular file");
    ntc_graph_free(g);
}
END_TEST

/* A valid file cut short anywhere fails with the message for where it was cut. */
START_TEST(truncated_file)
{
    const char *dir = tu_tmpdir();
    char *full = in_dir(dir, "full.safetensors"), *cut = in_dir(dir, "cut.safetensors");
    const char *header = "{" W "," B "}";
    write_st(full, header, tiny_data, 16);
    size_t n;
    unsigned char *b = read_bytes(full, &n);
    size_t h = strlen(header);
    const struct {
        size_t len;
        const char *error;
    } cuts[] = {
        {0, "file is too short for a safetensors header (0 bytes, needs at least 8)"},
        {3, "too short"},
        {7, "too short"},
        {8, "header length 132 runs past the end of the file (8 bytes)"},
        {8 + h / 2, "runs past the end of the file"},
        {8 + h - 1, "runs past the end of the file"},
        {8 + h, "tensor 'conv.weight': data_offsets [0,8] lie outside the data section (0 bytes)"},
        {8 + h + 7, "tensor 'conv.weight': data_offsets [0,8] lie outside the data section (7 bytes)"},
        {n - 1, "data_offsets [8,16] lie outside the data section (15 bytes)"},
    };
    ck_assert_uint_eq(h, 132);
    ntc_graph *g = tiny();
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        write_bytes(cut, b, cuts[i].len);
        expect_error(g, cut, cuts[i].error);
    }
    ntc_err err = {0};
    ck_assert_msg(ntc_weights_load(g, full, &err) == 0, "%s", ntc_err_str(&err));
    free(b);
    ntc_graph_free(g);
}
END_TEST

START_TEST(header_length_too_large)
{
    const char *dir = tu_tmpdir();
    char *path = in_dir(dir, "huge.safetensors");
    const char *header = "{" W "," B "}";
    const uint64_t lens[] = {UINT64_MAX, (uint64_t)1 << 63, 8 + strlen(header) + 16 - 7};
    const char *msgs[] = {"header length 18446744073709551615 runs past the end of the file (156 bytes)",
                          "header length 9223372036854775808 runs past", "header length 149 runs past"};
    ntc_graph *g = tiny();
    for (int k = 0; k < 3; k++) {
        write_st(path, header, tiny_data, 16);
        size_t n;
        unsigned char *b = read_bytes(path, &n);
        for (int i = 0; i < 8; i++)
            b[i] = (unsigned char)(lens[k] >> (8 * i));
        write_bytes(path, b, n);
        free(b);
        expect_error(g, path, msgs[k]);
    }
    ntc_graph_free(g);
}
END_TEST

/* ---- lifetime of data and mappings ----------------------------------------------- */

START_TEST(load_twice_replaces_without_leaks)
{
    const char *dir = tu_tmpdir();
    char *a = in_dir(dir, "a.safetensors"), *b = in_dir(dir, "b.safetensors");
    ntc_set_allocator(counting_alloc, NULL);
    live_allocs = 0;
    ntc_graph *src = net(true);
    ntc_err err = {0};
    fill(src, 1);
    ck_assert_int_eq(ntc_weights_save(src, a, &err), 0);
    fill(src, 2);
    ck_assert_int_eq(ntc_weights_save(src, b, &err), 0);

    /* Owned data is freed when a file replaces it. */
    ntc_graph *g = net(true);
    fill(g, 3);
    ck_assert_msg(ntc_weights_load(g, a, &err) == 0, "%s", ntc_err_str(&err));
    ck_assert_int_eq(mappings_of(a, NULL, NULL), 1);
    ck_assert(!param(g, "fc.weight")->owned);
    /* A second file replaces the first, whose mapping nothing uses any more. */
    ck_assert_msg(ntc_weights_load(g, b, &err) == 0, "%s", ntc_err_str(&err));
    ck_assert_int_eq(mappings_of(a, NULL, NULL), 0);
    ck_assert_int_eq(mappings_of(b, NULL, NULL), 1);
    ck_assert(memcmp(param(g, "fc.weight")->data, param(src, "fc.weight")->data, 20 * sizeof(float)) == 0);
    /* The same file again: still one mapping. */
    ck_assert_int_eq(ntc_weights_load(g, b, &err), 0);
    ck_assert_int_eq(mappings_of(b, NULL, NULL), 1);
    ntc_graph_free(g);
    ntc_graph_free(src);
    ck_assert_int_eq(live_allocs, 0);
    ntc_set_allocator(NULL, NULL);
}
END_TEST

/* A mapping stays while any parameter points into it. */
START_TEST(partial_replacement_keeps_mapping)
{
    const char *dir = tu_tmpdir();
    char *full = in_dir(dir, "full.safetensors"), *small = in_dir(dir, "small.safetensors");
    ntc_graph *src = tiny();
    fill(src, 5);
    ntc_err err = {0};
    ck_assert_int_eq(ntc_weights_save(src, full, &err), 0);
    ntc_graph *g = tiny();
    ck_assert_int_eq(ntc_weights_load(g, full, &err), 0);
    /* A pass dropped the weight (dead until compaction); a file without it loads. */
    ntc_value *w = param(g, "conv.weight");
    w->dead = true;
    write_st(small, "{\"conv.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", tiny_data, 8);
    ck_assert_msg(ntc_weights_load(g, small, &err) == 0, "%s", ntc_err_str(&err));
    ck_assert(param(g, "conv.bias")->data[0] == 1.5f);
    /* The dead weight still points into the first file, which stays mapped. */
    ck_assert_int_eq(mappings_of(full, NULL, NULL), 1);
    ck_assert(w->data[0] == param(src, "conv.weight")->data[0]);
    ntc_graph_free(g);
    ck_assert_int_eq(mappings_of(full, NULL, NULL), 0);
    ck_assert_int_eq(mappings_of(small, NULL, NULL), 0);
    ntc_graph_free(src);
}
END_TEST

START_TEST(free_unmaps)
{
    char *path = in_dir(tu_tmpdir(), "w.safetensors");
    ntc_graph *src = net(true);
    fill(src, 9);
    ntc_err err = {0};
    ck_assert_int_eq(ntc_weights_save(src, path, &err), 0);
    ntc_graph *g[3];
    for (int i = 0; i < 3; i++) {
        g[i] = net(true);
        ck_assert_int_eq(ntc_weights_load(g[i], path, &err), 0);
        ck_assert_int_eq(mappings_of(path, NULL, NULL), i + 1);
    }
    for (int i = 0; i < 3; i++) {
        ntc_graph_free(g[i]);
        ck_assert_int_eq(mappings_of(path, NULL, NULL), 2 - i);
    }
    ntc_graph_free(src);
}
END_TEST

/* Failing each allocation of a load and of a save in turn: the call reports
 * it, changes nothing, and leaks nothing. */
START_TEST(allocation_failures)
{
    const char *dir = tu_tmpdir();
    char *path = in_dir(dir, "w.safetensors"), *out = in_dir(dir, "out.safetensors");
    ntc_graph *src = net(true);
    fill(src, 6);
    ntc_err err = {0};
    ck_assert_int_eq(ntc_weights_save(src, path, &err), 0);
    ntc_set_allocator(failing_alloc, NULL);
    int failures = 0;
    for (long n = 1;; n++) {
        live_allocs = 0;
        fail_at = 0;
        ntc_graph *g = net(true);
        fill(g, 8);
        float *before = param(g, "conv.weight")->data;
        alloc_calls = 0;
        fail_at = n;
        int rc = ntc_weights_load(g, path, &err);
        bool hit = alloc_calls >= n;
        fail_at = 0;
        ck_assert_msg(rc == (hit ? -1 : 0), "allocation %ld failing: load returned %d (%s)", n, rc, err.msg);
        if (rc != 0) {
            ck_assert_str_eq(err.msg, "out of memory");
            ck_assert_ptr_eq(param(g, "conv.weight")->data, before);
            ck_assert_int_eq(mappings_of(path, NULL, NULL), 0);
            failures++;
        }
        ntc_graph_free(g);
        ck_assert_int_eq(live_allocs, 0);
        if (!hit)
            break;
    }
    ck_assert_int_ge(failures, 4);
    for (long n = 1;; n++) {
        live_allocs = 0;
        alloc_calls = 0;
        fail_at = n;
        int rc = ntc_weights_save(src, out, &err);
        bool hit = alloc_calls >= n;
        fail_at = 0;
        ck_assert_int_eq(live_allocs, 0);
        if (!hit) {
            ck_assert_int_eq(rc, 0);
            break;
        }
        ck_assert_int_eq(rc, -1);
        ck_assert_str_eq(err.msg, "out of memory");
        ck_assert_ptr_null(fopen(out, "rb"));
    }
    ntc_set_allocator(NULL, NULL);
    ntc_graph_free(src);
}
END_TEST

/* ---- random corruption ---------------------------------------------------------- */

/* Random byte changes and truncations of a valid file never crash the
 * loader: every attempt loads or fails with a message, and a load that
 * succeeds gives every parameter data. */
START_TEST(random_corruption)
{
    const char *dir = tu_tmpdir();
    char *good = in_dir(dir, "good.safetensors"), *bad = in_dir(dir, "bad.safetensors");
    ntc_graph *src = net(true);
    fill(src, 4);
    ntc_err err = {0};
    ck_assert_int_eq(ntc_weights_save(src, good, &err), 0);
    size_t n;
    unsigned char *orig = read_bytes(good, &n), *b = malloc(n);
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--)
        h = h << 8 | orig[i];
    /* Characters that change a header's meaning more often than random bytes. */
    const char interesting[] = "{}[]\":,0123456789-eE.\\u \x80\xff";
    unsigned seed = 12345;
    int loaded = 0, failed = 0;
    ntc_graph *g = net(true);
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(b, orig, n);
        size_t len = n;
        int flips = 1 + (int)((tu_randf(&seed) + 1.0f) * 2.0f);
        for (int k = 0; k < flips; k++) {
            /* Mostly inside the length field and the header. */
            float r = (tu_randf(&seed) + 1.0f) / 2.0f;
            size_t at = (size_t)(r * (float)(iter % 4 ? 8 + h : n)) % n;
            unsigned pick = (unsigned)((tu_randf(&seed) + 1.0f) * 1000.0f);
            if (pick % 3 == 0)
                b[at] = (unsigned char)interesting[pick % (sizeof interesting - 1)];
            else if (pick % 3 == 1)
                b[at] ^= (unsigned char)(1u << (pick % 8));
            else
                b[at] = (unsigned char)pick;
        }
        if (iter % 10 == 0)
            len = (size_t)((tu_randf(&seed) + 1.0f) / 2.0f * (float)n);
        write_bytes(bad, b, len);
        memset(&err, 0, sizeof err);
        if (ntc_weights_load(g, bad, &err) == 0) {
            loaded++;
            for (int v = 0; v < g->n_values; v++)
                if (g->values[v].kind == NTC_VAL_PARAM)
                    ck_assert_ptr_nonnull(g->values[v].data);
        } else {
            failed++;
            ck_assert_msg(err.msg[0] != 0, "empty error message at iteration %d", iter);
            ck_assert_str_eq(err.file, bad);
        }
    }
    ck_assert_int_gt(loaded, 0);
    ck_assert_int_gt(failed, 0);
    ntc_graph_free(g);
    ck_assert_int_eq(mappings_of(bad, NULL, NULL), 0);
    free(orig);
    free(b);
    ntc_graph_free(src);
}
END_TEST

/* ---- the JSON reader ------------------------------------------------------------------ */

static ntc_json *parse(ntc_arena *a, const char *text, ntc_json_error *e)
{
    return ntc_json_parse(a, text, strlen(text), e);
}

START_TEST(json_values)
{
    ntc_arena *a = ntc_arena_new();
    ntc_json_error e;
    ntc_json *j = parse(a, " {\"s\": \"a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\", \"n\": [0, -1.5e2, 18446744073709551615,"
                           " 18446744073709551616, 1e2], \"t\": true, \"f\": false, \"z\": null, \"o\": {}} ",
                     &e);
    ck_assert_msg(j, "%s at %zu", e.msg, e.offset);
    ck_assert_int_eq(j->type, NTC_JSON_OBJECT);
    ck_assert_int_eq(j->n, 6);
    ck_assert_str_eq(ntc_json_get(j, "s")->string, "a\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80");
    const ntc_json *n = ntc_json_get(j, "n");
    ck_assert_int_eq(n->n, 5);
    const ntc_json *x = n->first;
    ck_assert(x->is_uint && x->uint == 0);
    x = x->next;
    ck_assert(!x->is_uint && x->number == -150.0);
    x = x->next;
    ck_assert(x->is_uint && x->uint == UINT64_MAX);
    x = x->next;
    ck_assert(!x->is_uint);
    x = x->next;
    ck_assert(!x->is_uint && x->number == 100.0);
    ck_assert(ntc_json_get(j, "t")->boolean && !ntc_json_get(j, "f")->boolean);
    ck_assert_int_eq(ntc_json_get(j, "z")->type, NTC_JSON_NULL);
    ck_assert_int_eq(ntc_json_get(j, "o")->n, 0);
    ck_assert_ptr_null(ntc_json_get(j, "missing"));
    ntc_arena_free(a);
}
END_TEST

START_TEST(json_errors)
{
    static const struct {
        const char *text;
        const char *error;
        size_t offset;
    } cases[] = {
        {"", "expected a value, found the end of the text", 0},
        {"  ", "expected a value", 2},
        {"{\"a\" 1}", "expected ':' after a member name, found '1'", 5},
        {"[1,]", "expected a value, found ']'", 3},
        {"[1 2]", "expected ',' or ']' in an array, found '2'", 3},
        {"tru", "expected a value, found 't'", 0},
        {"-", "expected a digit, found the end of the text", 1},
        {"1.", "expected a digit after '.'", 2},
        {"1e+", "expected a digit in the exponent", 3},
        {"\"abc", "unterminated string", 0},
        {"\"a\\", "unterminated string", 0},
        {"\"\\x\"", "bad escape sequence", 1},
        {"\"\\u12g4\"", "bad escape sequence", 1},
        {"\"\\udc00\"", "unpaired UTF-16 surrogate", 1},
        {"\"\\ud800\\u0041\"", "unpaired UTF-16 surrogate", 1},
        {"\"\t\"", "control character inside a string", 1},
        {"\"\xc0\x80\"", "invalid UTF-8", 1},
        {"\"\xed\xa0\x80\"", "invalid UTF-8", 1},
        {"\"\xe2\x82\"", "invalid UTF-8", 1},
        {"{} {}", "unexpected '{' after the JSON value", 3},
    };
    ntc_arena *a = ntc_arena_new();
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ntc_json_error e = {{0}};
        ck_assert_msg(!parse(a, cases[i].text, &e), "'%s' parsed", cases[i].text);
        ck_assert_msg(strstr(e.msg, cases[i].error), "'%s': got '%s'", cases[i].text, e.msg);
        ck_assert_msg(e.offset == cases[i].offset, "'%s': offset %zu", cases[i].text, e.offset);
    }
    /* Nesting is bounded, so hostile input cannot exhaust the stack. */
    char deep[1001];
    memset(deep, '[', 1000);
    deep[1000] = 0;
    ntc_json_error e;
    ck_assert_ptr_null(parse(a, deep, &e));
    ck_assert_str_eq(e.msg, "nesting is too deep");
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    deep[200] = 0;
    ck_assert_ptr_nonnull(parse(a, deep, &e));
    /* The text need not end with NUL: only len bytes are read. */
    ck_assert_ptr_nonnull(ntc_json_parse(a, "12345", 3, &e));
    ck_assert_uint_eq(ntc_json_parse(a, "12345", 3, &e)->uint, 123);
    ntc_arena_free(a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("weights");
    TCase *tc = tcase_create("weights");
    tcase_add_test(tc, round_trip_bit_identical);
    tcase_add_test(tc, saved_layout_follows_spec);
    tcase_add_test(tc, save_needs_shapes);
    tcase_add_test(tc, hand_written_file_loads);
    tcase_add_test(tc, misaligned_data_is_copied);
    tcase_add_test(tc, unknown_shapes_are_adopted);
    tcase_add_loop_test(tc, bad_header, 0, (int)(sizeof bad_headers / sizeof *bad_headers));
    tcase_add_test(tc, missing_file);
    tcase_add_test(tc, truncated_file);
    tcase_add_test(tc, header_length_too_large);
    tcase_add_test(tc, load_twice_replaces_without_leaks);
    tcase_add_test(tc, partial_replacement_keeps_mapping);
    tcase_add_test(tc, free_unmaps);
    tcase_add_test(tc, allocation_failures);
    suite_add_tcase(s, tc);
    TCase *fuzz = tcase_create("fuzz");
    tcase_set_timeout(fuzz, 300);
    tcase_add_test(fuzz, random_corruption);
    suite_add_tcase(s, fuzz);
    TCase *json = tcase_create("json");
    tcase_add_test(json, json_values);
    tcase_add_test(json, json_errors);
    suite_add_tcase(s, json);
    return tu_run(s);
}
