/* Writing the XML form of the IR (the schema is docs/ir.md).
 *
 * The output is a function of the graph alone: one element per line,
 * 2-space indentation, attributes in a fixed order, attributes equal to
 * the op's default left out, floats in the shortest form that reads back
 * to the same float.  So reading a written file and writing it again
 * reproduces it byte for byte.
 *
 * Order: metadata, inputs, then nodes in graph order, where the first live node of a
 * block opens that block's element, which holds all of the block's live
 * nodes (in graph order); then blocks without live nodes; then outputs.
 * Order in the file carries no meaning (the schedule is topological), so
 * gathering a block's nodes loses nothing. */
#include "ntc/ir.h"
#include "internal.h"
#include "xml_internal.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/xmlstring.h>

bool ntc_xml_name_ok(const char *name)
{
    if (!name || !*name || !xmlCheckUTF8((const xmlChar *)name))
        return false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p <= ' ' || *p == 0x7f || *p == ',')
            return false;
    return true;
}

/* Free text (graph name, weights file, metadata, layer names): valid UTF-8
 * without control characters other than tab, newline and carriage return,
 * which are written as character references so they survive reading. */
static bool text_ok(const char *s)
{
    if (!xmlCheckUTF8((const xmlChar *)s))
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p < ' ' && *p != '\t' && *p != '\n' && *p != '\r') || *p == 0x7f)
            return false;
    return true;
}

/* ---- an output buffer that remembers the first failure ----------------------- */

typedef struct {
    char *p;
    size_t n, cap;
    ntc_err *err;
    bool failed;
} sbuf;

static void fail(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(sbuf *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    b->failed = true;
    char msg[sizeof b->err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ntc_error(b->err, NULL, 0, "%s", msg);
}

static void put_n(sbuf *b, const char *s, size_t len)
{
    if (b->failed)
        return;
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + len + 1)
            cap *= 2;
        char *p = ntc_realloc(b->p, cap);
        if (!p) {
            fail(b, "out of memory");
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = 0;
}

static void put(sbuf *b, const char *s) { put_n(b, s, strlen(s)); }

/* value escaped for an attribute in double quotes. */
static void put_escaped(sbuf *b, const char *value)
{
    for (const char *p = value; *p;) {
        size_t run = strcspn(p, "&<>\"\t\n\r");
        put_n(b, p, run);
        p += run;
        switch (*p) {
        case 0: return;
        case '&': put(b, "&amp;"); break;
        case '<': put(b, "&lt;"); break;
        case '>': put(b, "&gt;"); break;
        case '"': put(b, "&quot;"); break;
        case '\t': put(b, "&#9;"); break;
        case '\n': put(b, "&#10;"); break;
        default: put(b, "&#13;"); break;
        }
        p++;
    }
}

static void put_attr(sbuf *b, const char *key, const char *value)
{
    put(b, " ");
    put(b, key);
    put(b, "=\"");
    put_escaped(b, value);
    put(b, "\"");
}

static void put_name(sbuf *b, const char *key, const char *what, const char *name)
{
    if (!ntc_xml_name_ok(name))
        fail(b, "cannot write %s '%s': names are non-empty UTF-8 without ',' or whitespace", what, name ? name : "");
    put_attr(b, key, name);
}

static void put_text(sbuf *b, const char *key, const char *text)
{
    if (!text_ok(text))
        fail(b, "cannot write %s='%s': not UTF-8 text", key, text);
    put_attr(b, key, text);
}

/* ---- attribute values ------------------------------------------------------------- */

/* The shortest %g form that reads back to exactly f. */
static void format_float(float f, char *buf, size_t len)
{
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, len, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f)
            return;
    }
}

/* Writes op attribute `s` of node n unless every element equals the default. */
static void put_op_attr(sbuf *b, const ntc_node *n, const ntc_attr_spec *s)
{
    const char *field = (const char *)&n->a + s->offset;
    char buf[96];
    if (s->type == NTC_ATTR_FLOAT) {
        float f = *(const float *)(const void *)field;
        if (f == (float)s->def)
            return;
        format_float(f, buf, sizeof buf);
        put_attr(b, s->name, buf);
        return;
    }
    const int *v = (const int *)(const void *)field;
    int count = s->type == NTC_ATTR_INT4 ? 4 : s->type == NTC_ATTR_INT2 ? 2 : 1;
    bool is_default = true;
    for (int i = 0; i < count; i++)
        is_default &= v[i] == (int)s->def;
    if (is_default)
        return;
    /* The shortest form the reader broadcasts back: "k" when all are
     * equal, "h,w" when both sides of the padding agree. */
    bool all_equal = true;
    for (int i = 1; i < count; i++)
        all_equal &= v[i] == v[0];
    if (all_equal)
        snprintf(buf, sizeof buf, "%d", v[0]);
    else if (count == 2 || (v[0] == v[2] && v[1] == v[3]))
        snprintf(buf, sizeof buf, "%d,%d", v[0], v[1]);
    else
        snprintf(buf, sizeof buf, "%d,%d,%d,%d", v[0], v[1], v[2], v[3]);
    put_attr(b, s->name, buf);
}

static void put_node(sbuf *b, const ntc_graph *g, const ntc_node *n, const char *indent)
{
    const ntc_op_info *info = &ntc_ops[n->op];
    put(b, indent);
    put(b, "<node");
    put_attr(b, "op", info->name);
    put_name(b, "name", "node name", n->name);
    /* in="a,b,c": names cannot hold commas, so the list is unambiguous. */
    put(b, " in=\"");
    for (int j = 0; j < n->n_in; j++) {
        const char *vn = g->values[n->in[j]].name;
        if (!ntc_xml_name_ok(vn))
            fail(b, "cannot write value name '%s': names are non-empty UTF-8 without ',' or whitespace", vn);
        if (j)
            put(b, ",");
        put_escaped(b, vn);
    }
    put(b, "\"");
    for (const ntc_attr_spec *s = info->attrs; s->name; s++)
        put_op_attr(b, n, s);
    for (int j = 0; info->params[j].name; j++) {
        int p = n->par[j];
        if (p < 0)
            continue;
        const char *pn = g->values[p].name;
        char def[1024];
        snprintf(def, sizeof def, "%s.%s", n->name, info->params[j].name);
        if (info->params[j].optional || strcmp(pn, def))
            put_name(b, info->params[j].name, "parameter name", pn);
    }
    put(b, "/>\n");
}

static void put_block_open(sbuf *b, const ntc_block *blk, bool empty)
{
    put(b, "  <block");
    put_name(b, "name", "block name", blk->name);
    if (blk->role != NTC_ROLE_UNIVERSAL && blk->role != NTC_ROLE_TASK)
        fail(b, "cannot write block '%s': its role must be universal or task", blk->name);
    put_attr(b, "role", ntc_role_name(blk->role));
    if (blk->frozen)
        put_attr(b, "frozen", "true");
    if (blk->layer)
        put_text(b, "layer", blk->layer);
    if (blk->reads)
        put_text(b, "reads", blk->reads);
    put(b, empty ? "/>\n" : ">\n");
}

/* The whole document; NULL with err filled (no location) on failure. */
static char *emit(const ntc_graph *g, size_t *len, ntc_err *err)
{
    sbuf b = {.err = err};
    bool *written = ntc_calloc((size_t)g->n_blocks + 1, sizeof(bool));
    if (!written) {
        ntc_error(err, NULL, 0, "out of memory");
        return NULL;
    }
    put(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<graph");
    put_text(&b, "name", g->name);
    char ver[16];
    snprintf(ver, sizeof ver, "%d", NTC_IR_VERSION);
    put_attr(&b, "ir-version", ver);
    if (g->weights)
        put_text(&b, "weights", g->weights);
    put(&b, ">\n");

    for (int i = 0; i < g->n_meta; i++) {
        if (!*g->meta[i].key)
            fail(&b, "cannot write metadata with an empty key");
        put(&b, "  <meta");
        put_text(&b, "key", g->meta[i].key);
        put_text(&b, "value", g->meta[i].value);
        put(&b, "/>\n");
    }
    for (int i = 0; i < g->n_inputs; i++) {
        const ntc_value *v = &g->values[g->inputs[i]];
        if (v->dead)
            continue;
        char shape[256] = "";
        if (v->shape.rank < 1 || ntc_shape_format(&v->shape, shape, sizeof shape))
            fail(&b, "cannot write input '%s': it has no shape", v->name);
        put(&b, "  <input");
        put_name(&b, "name", "input name", v->name);
        put_attr(&b, "shape", shape);
        put(&b, "/>\n");
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        int bi = n->block >= 0 && n->block < g->n_blocks && !g->blocks[n->block].dead ? n->block : -1;
        if (bi < 0) {
            put_node(&b, g, n, "  ");
            continue;
        }
        if (written[bi])
            continue;
        written[bi] = true;
        put_block_open(&b, &g->blocks[bi], false);
        for (int k = i; k < g->n_nodes; k++)
            if (!g->nodes[k].dead && g->nodes[k].block == bi)
                put_node(&b, g, &g->nodes[k], "    ");
        put(&b, "  </block>\n");
    }
    for (int i = 0; i < g->n_blocks; i++)
        if (!g->blocks[i].dead && !written[i])
            put_block_open(&b, &g->blocks[i], true);
    for (int i = 0; i < g->n_outputs; i++) {
        const ntc_output *o = &g->outputs[i];
        if (o->value < 0 || o->value >= g->n_values || g->values[o->value].dead)
            continue;
        put(&b, "  <output");
        put_name(&b, "name", "output name", o->name);
        put_name(&b, "from", "value name", g->values[o->value].name);
        put(&b, "/>\n");
    }
    put(&b, "</graph>\n");
    ntc_free(written);
    if (b.failed) {
        ntc_free(b.p);
        return NULL;
    }
    if (len)
        *len = b.n;
    return b.p;
}

char *ntc_graph_to_xml(const ntc_graph *g, size_t *len)
{
    return emit(g, len, NULL);
}

/* ---- the weights file's name, relative to the XML file ---------------------------- */

/* The directory part of path, resolved to an absolute path in out. */
static int resolved_dir(const char *path, char out[PATH_MAX])
{
    char dir[PATH_MAX];
    if (ntc_path_dir(path, dir, sizeof dir))
        return -1;
    return realpath(dir, out) ? 0 : -1;
}

/* `target` as a path relative to the directory of the file `from`: its
 * base name when both share a directory, "../w/x.safetensors" otherwise. */
static char *relative_to(const char *from, const char *target)
{
    char fd[PATH_MAX], td[PATH_MAX];
    if (resolved_dir(from, fd) || resolved_dir(target, td))
        return NULL;
    /* "/" becomes "" so that every directory is a list of "/name" parts. */
    if (!strcmp(fd, "/"))
        fd[0] = 0;
    if (!strcmp(td, "/"))
        td[0] = 0;
    const char *base = strrchr(target, '/') ? strrchr(target, '/') + 1 : target;
    /* Longest common prefix that ends at a component boundary. */
    size_t common = 0;
    for (size_t i = 0;; i++) {
        bool fe = fd[i] == 0 || fd[i] == '/', te = td[i] == 0 || td[i] == '/';
        if (fe && te)
            common = i;
        if (fd[i] != td[i] || !fd[i])
            break;
    }
    int ups = 0;
    for (const char *p = fd + common; *p; p++)
        ups += *p == '/';
    const char *down = td + common;     /* "" or "/sub/dir" */
    size_t len = (size_t)ups * 3 + strlen(down) + strlen(base) + 2;
    char *r = ntc_malloc(len);
    if (!r)
        return NULL;
    r[0] = 0;
    for (int i = 0; i < ups; i++)
        strcat(r, "../");
    if (*down)
        strcat(r, down + 1), strcat(r, "/");
    strcat(r, base);
    return r;
}

int ntc_graph_write_xml(ntc_graph *g, const char *path, const char *weights_path, ntc_err *err)
{
    /* The XML is staged (written and synced beside path) before the weights
     * replace theirs, and renamed into place after them: a full disk while
     * writing either file leaves the old pair as it was, never new weights
     * next to the old XML. */
    if (weights_path) {
        char *rel = relative_to(path, weights_path);
        char *name = rel ? ntc_graph_strdup(g, rel) : NULL;
        ntc_free(rel);
        if (!name)
            return ntc_error(err, path, 0, "cannot name the weights file '%s' relative to this file", weights_path);
        g->weights = name;
    }
    size_t len;
    char *text = emit(g, &len, err);
    if (!text) {
        if (err)
            snprintf(err->file, sizeof err->file, "%s", path);
        return -1;
    }
    char tmp[4096];
    int rc = ntc_file_stage(path, text, len, tmp, err);
    ntc_free(text);
    if (rc)
        return -1;
    if (weights_path && ntc_weights_save(g, weights_path, err)) {
        ntc_file_abandon(tmp);
        return -1;
    }
    return ntc_file_commit(tmp, path, err);
}
