/* Reading the XML form of the IR (the schema is docs/ir.md).
 *
 * Two passes over the parsed document.  The first creates inputs, blocks,
 * nodes and their parameters in file order and checks every attribute
 * against the op's row of the ops table; the second resolves the value
 * names in `in` and `from`, so a node may read a value defined further
 * down: order in the file is not semantic, ntc_graph_topo_order gives the
 * schedule and reports cycles.  Every error names the file and the line
 * of the element at fault. */
#include "ntc/ir.h"
#include "xml_internal.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

/* Most attributes of any row of the ops table (conv2d has 5). */
#define MAX_OP_ATTRS 16

/* One attribute of the element being read; `used` catches typos. */
typedef struct {
    const char *name, *value;
    bool used;
} xattr;

/* The element being read, its attributes copied out of libxml2. */
typedef struct {
    xmlNodePtr el;
    const char *tag;
    int line;
    xattr *attrs;
    int n_attrs;
    const char *missing;         /* first required attribute found absent */
} xelem;

/* A node's `in` list, kept from pass 1 to pass 2. */
typedef struct {
    char **names;
    int n;
} in_list;

/* A graph output, resolved in pass 2. */
typedef struct {
    const char *name, *from;
    int line;
} pending_output;

typedef struct {
    const char *path;
    ntc_err *err;
    ntc_graph *g;
    ntc_arena *scratch;          /* attribute copies, freed after reading */
    in_list *ins;                /* per node handle */
    int cap_ins;
    pending_output *outs;
    int n_outs, cap_outs;
} reader;

static int line_of(xmlNodePtr el)
{
    long l = xmlGetLineNo(el);
    return l > 0 && l < INT_MAX ? (int)l : 0;
}

static int fail(reader *r, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(reader *r, int line, const char *fmt, ...)
{
    char msg[sizeof r->err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ntc_error(r->err, r->path, line, "%s", msg);
}

static int oom(reader *r, int line) { return fail(r, line, "out of memory"); }

/* ---- elements and attributes ------------------------------------------------ */

/* "prefix:name" in the scratch arena: namespaced names keep their prefix,
 * so that they never match the schema's plain names. */
static const char *qualified(reader *r, const xmlNs *ns, const xmlChar *name)
{
    if (!ns || !ns->prefix)
        return (const char *)name;
    size_t lp = strlen((const char *)ns->prefix), ln = strlen((const char *)name);
    char *q = ntc_arena_alloc(r->scratch, lp + ln + 2);
    if (q) {
        memcpy(q, ns->prefix, lp);
        q[lp] = ':';
        memcpy(q + lp + 1, name, ln + 1);
    }
    return q;
}

static int load_elem(reader *r, xmlNodePtr el, xelem *e)
{
    memset(e, 0, sizeof *e);
    e->el = el;
    e->tag = qualified(r, el->ns, el->name);
    e->line = line_of(el);
    if (!e->tag)
        return oom(r, e->line);
    for (xmlAttrPtr a = el->properties; a; a = a->next)
        e->n_attrs++;
    e->attrs = ntc_arena_alloc(r->scratch, sizeof(xattr) * (size_t)(e->n_attrs + 1));
    if (!e->attrs)
        return oom(r, e->line);
    int i = 0;
    for (xmlAttrPtr a = el->properties; a; a = a->next, i++) {
        xmlChar *v = xmlNodeListGetString(el->doc, a->children, 1);
        e->attrs[i].name = qualified(r, a->ns, a->name);
        if (!e->attrs[i].name)
            return oom(r, e->line);
        e->attrs[i].value = ntc_arena_strdup(r->scratch, v ? (const char *)v : "");
        xmlFree(v);
        if (!e->attrs[i].value)
            return oom(r, e->line);
    }
    return 0;
}

/* The value of attribute `name`, marked used; NULL when absent. */
static const char *get(xelem *e, const char *name)
{
    for (int i = 0; i < e->n_attrs; i++)
        if (!strcmp(e->attrs[i].name, name)) {
            e->attrs[i].used = true;
            return e->attrs[i].value;
        }
    return NULL;
}

/* Like get, and remembers the first required attribute that is absent;
 * reported by check_attrs, after unknown attributes, so that a misspelt
 * attribute is named as such rather than as the one it was meant to be. */
static const char *need(xelem *e, const char *name)
{
    const char *v = get(e, name);
    if (!v && !e->missing)
        e->missing = name;
    return v;
}

static int report_missing(reader *r, const xelem *e)
{
    if (e->missing)
        return fail(r, e->line, "<%s> lacks the required attribute '%s'", e->tag, e->missing);
    return 0;
}

/* Once every attribute the element takes was looked up: rejects the first
 * one nobody asked for (a typo must not pass silently), then a missing
 * one.  `accepted` lists the attributes the element takes. */
static int check_attrs(reader *r, const xelem *e, const char *accepted)
{
    for (int i = 0; i < e->n_attrs; i++)
        if (!e->attrs[i].used)
            return fail(r, e->line, "unknown attribute '%s' on <%s> (it takes: %s)",
                        e->attrs[i].name, e->tag, accepted);
    return report_missing(r, e);
}

static int reject_unused_node(reader *r, const xelem *e, const char *node, ntc_op op)
{
    for (int i = 0; i < e->n_attrs; i++) {
        if (e->attrs[i].used)
            continue;
        char accepted[512];
        size_t at = (size_t)snprintf(accepted, sizeof accepted, "op, name, in");
        for (const ntc_attr_spec *s = ntc_ops[op].attrs; s->name && at < sizeof accepted; s++)
            at += (size_t)snprintf(accepted + at, sizeof accepted - at, ", %s", s->name);
        for (const ntc_param_spec *p = ntc_ops[op].params; p->name && at < sizeof accepted; p++)
            at += (size_t)snprintf(accepted + at, sizeof accepted - at, ", %s", p->name);
        if (!node)
            return fail(r, e->line, "unknown attribute '%s' on <node> (op %s takes: %s)", e->attrs[i].name,
                        ntc_op_name(op), accepted);
        return fail(r, e->line, "node '%s': unknown attribute '%s' (op %s takes: %s)", node,
                    e->attrs[i].name, ntc_op_name(op), accepted);
    }
    return report_missing(r, e);
}

static int check_name(reader *r, const xelem *e, const char *what, const char *name)
{
    if (!ntc_xml_name_ok(name))
        return fail(r, e->line, "bad %s '%s': names are non-empty and hold no ',' or whitespace", what, name);
    return 0;
}

/* Element children of el, in order; text other than whitespace is an
 * error, comments and processing instructions are skipped. */
static int next_child(reader *r, xmlNodePtr *cur, xmlNodePtr parent)
{
    xmlNodePtr c = *cur ? (*cur)->next : parent->children;
    for (; c; c = c->next) {
        if (c->type == XML_ELEMENT_NODE)
            break;
        if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) {
            const char *s = (const char *)c->content;
            size_t lead = s ? strspn(s, " \t\n\r") : 0;
            if (s && s[lead]) {
                /* libxml2 numbers a text node by the line it ends on. */
                int line = line_of(c);
                for (const char *p = s + lead; *p; p++)
                    line -= *p == '\n';
                int word = (int)strcspn(s + lead, " \t\n\r");
                return fail(r, line, "unexpected text '%.*s' inside <%s>", word < 20 ? word : 20, s + lead,
                            (const char *)parent->name);
            }
        } else if (c->type == XML_ENTITY_REF_NODE) {
            return fail(r, line_of(c), "unexpected entity reference inside <%s>", (const char *)parent->name);
        }
    }
    *cur = c;
    return 0;
}

static int no_children(reader *r, xmlNodePtr el)
{
    xmlNodePtr c = NULL;
    if (next_child(r, &c, el))
        return -1;
    if (c)
        return fail(r, line_of(c), "<%s> cannot contain <%s>", (const char *)el->name, (const char *)c->name);
    return 0;
}

/* ---- attribute values ----------------------------------------------------------- */

/* Parses "a" or "a,b,..." (at most max integers) into out; returns the
 * count, or -1 when the text is not such a list. */
static int parse_ints(const char *s, int *out, int max)
{
    int n = 0;
    for (const char *p = s;; p++) {
        if (n == max)
            return -1;
        const char *digits = *p == '-' ? p + 1 : p;
        if (*digits < '0' || *digits > '9')
            return -1;
        char *end;
        long v = strtol(p, &end, 10);
        if (v < INT_MIN || v > INT_MAX)
            return -1;
        out[n++] = (int)v;
        p = end;
        if (!*p)
            return n;
        if (*p != ',')
            return -1;
    }
}

/* Reads one op attribute into a.  Negative numbers mean "counted from the
 * end" for axis and are meaningless everywhere else, so only axis takes them. */
static int parse_attr(reader *r, const xelem *e, const char *node, const ntc_attr_spec *spec,
                      const char *text, ntc_attrs *a)
{
    char *field = (char *)a + spec->offset;
    if (spec->type == NTC_ATTR_FLOAT) {
        char *end;
        double d = strtod(text, &end);
        if (!*text || *end || !isfinite(d) || !isfinite((float)d))
            return fail(r, e->line, "node '%s': attribute %s='%s' is not a finite number", node, spec->name, text);
        *(float *)(void *)field = (float)d;
        return 0;
    }
    int v[4];
    int max = spec->type == NTC_ATTR_INT4 ? 4 : spec->type == NTC_ATTR_INT2 ? 2 : 1;
    int n = parse_ints(text, v, max);
    const char *want = spec->type == NTC_ATTR_INT4   ? "1, 2 (h,w) or 4 (top,left,bottom,right) integers"
                       : spec->type == NTC_ATTR_INT2 ? "1 or 2 (h,w) integers"
                                                     : "an integer";
    if (n < 0 || (spec->type == NTC_ATTR_INT4 && n == 3))
        return fail(r, e->line, "node '%s': attribute %s='%s' must be %s", node, spec->name, text, want);
    for (int i = 0; i < n; i++)
        if (v[i] < 0 && strcmp(spec->name, "axis"))
            return fail(r, e->line, "node '%s': attribute %s='%s' must not be negative", node, spec->name, text);
    int *dst = (int *)(void *)field;
    if (n == 1)
        for (int i = 0; i < max; i++)
            dst[i] = v[0];
    else if (n == 2 && max == 4)
        dst[0] = dst[2] = v[0], dst[1] = dst[3] = v[1];
    else
        memcpy(dst, v, sizeof(int) * (size_t)n);
    return 0;
}

static void op_list(char *buf, size_t len)
{
    size_t at = 0;
    buf[0] = 0;
    for (int i = 0; i < NTC_OP_COUNT && at < len; i++)
        at += (size_t)snprintf(buf + at, len - at, "%s%s", i ? ", " : "", ntc_ops[i].name);
}

/* Splits a comma list (spaces around items allowed) into scratch strings. */
static int split_names(reader *r, const xelem *e, const char *node, const char *text, in_list *out)
{
    int n = 1;
    for (const char *p = text; *p; p++)
        n += *p == ',';
    out->names = ntc_arena_alloc(r->scratch, sizeof(char *) * (size_t)n);
    if (!out->names)
        return oom(r, e->line);
    out->n = 0;
    const char *p = text;
    for (;;) {
        while (*p == ' ')
            p++;
        size_t len = strcspn(p, ",");
        while (len > 0 && p[len - 1] == ' ')
            len--;
        char *item = ntc_arena_alloc(r->scratch, len + 1);
        if (!item)
            return oom(r, e->line);
        memcpy(item, p, len);
        if (!ntc_xml_name_ok(item))
            return fail(r, e->line, "node '%s': bad value name '%s' in in='%s'", node, item, text);
        out->names[out->n++] = item;
        p = strchr(p, ',');
        if (!p)
            return 0;
        p++;
    }
}

/* ---- pass 1: elements ----------------------------------------------------------- */

/* A name not yet taken by any input, parameter or node output. */
static int check_fresh(reader *r, const xelem *e, const char *name)
{
    int v = ntc_graph_find_value(r->g, name);
    if (v < 0)
        return 0;
    int p = r->g->values[v].producer;
    if (p >= 0)
        return fail(r, e->line, "duplicate name '%s' (node on line %d)", name, r->g->nodes[p].line);
    return fail(r, e->line, "duplicate name '%s'", name);
}

static int read_input(reader *r, xmlNodePtr el)
{
    xelem e;
    if (load_elem(r, el, &e))
        return -1;
    const char *name = need(&e, "name");
    const char *shape = need(&e, "shape");
    if (check_attrs(r, &e, "name, shape") || check_name(r, &e, "input name", name) ||
        check_fresh(r, &e, name) || no_children(r, el))
        return -1;
    ntc_shape s;
    if (ntc_shape_parse(shape, &s))
        return fail(r, e.line, "input '%s': bad shape '%s' (expected comma-separated sizes >= 1, "
                    "the first may be N, at most %d)", name, shape, NTC_MAX_RANK);
    if (ntc_graph_add_input(r->g, name, &s) < 0)
        return oom(r, e.line);
    return 0;
}

static int read_node(reader *r, xmlNodePtr el, int block)
{
    xelem e;
    if (load_elem(r, el, &e))
        return -1;
    const char *opname = need(&e, "op");
    if (!opname)
        return report_missing(r, &e);
    int op = ntc_op_lookup(opname);
    if (op < 0) {
        char ops[512];
        op_list(ops, sizeof ops);
        return fail(r, e.line, "unknown op '%s' (known ops: %s)", opname, ops);
    }
    const ntc_op_info *info = &ntc_ops[op];
    /* Look every known attribute up first, so that a misspelt one is
     * reported as such rather than as the required one it was meant to be. */
    const char *name = need(&e, "name"), *in = need(&e, "in");
    const char *texts[MAX_OP_ATTRS] = {0}, *par_names[NTC_MAX_PARAMS] = {0};
    for (int k = 0; info->attrs[k].name; k++) {
        if (k == MAX_OP_ATTRS)
            return fail(r, e.line, "op %s has more than %d attributes; raise MAX_OP_ATTRS", opname, MAX_OP_ATTRS);
        texts[k] = get(&e, info->attrs[k].name);
    }
    for (int j = 0; info->params[j].name; j++)
        par_names[j] = get(&e, info->params[j].name);
    if (reject_unused_node(r, &e, name, (ntc_op)op) || check_name(r, &e, "node name", name) ||
        check_fresh(r, &e, name) || no_children(r, el))
        return -1;
    in_list ins;
    if (split_names(r, &e, name, in, &ins))
        return -1;
    if (ins.n < info->min_in || (info->max_in && ins.n > info->max_in)) {
        if (info->max_in == info->min_in)
            return fail(r, e.line, "node '%s': op %s takes %d input(s), got %d", name, opname, info->min_in, ins.n);
        return fail(r, e.line, "node '%s': op %s takes at least %d input(s), got %d", name, opname,
                    info->min_in, ins.n);
    }
    ntc_attrs a;
    ntc_attrs_default((ntc_op)op, &a);
    for (int k = 0; info->attrs[k].name; k++) {
        if (!texts[k] && info->attrs[k].required)
            return fail(r, e.line, "node '%s': op %s needs the attribute '%s'", name, opname, info->attrs[k].name);
        if (texts[k] && parse_attr(r, &e, name, &info->attrs[k], texts[k], &a))
            return -1;
    }
    /* Parameter slots: an explicit name, else the default "<node>.<slot>"
     * for required slots; optional slots exist only when named. */
    char defaults[NTC_MAX_PARAMS][1024];
    for (int j = 0; info->params[j].name; j++) {
        const char *pn = par_names[j];
        if (pn && check_name(r, &e, "parameter name", pn))
            return -1;
        if (!pn && !info->params[j].optional) {
            if (snprintf(defaults[j], sizeof defaults[j], "%s.%s", name, info->params[j].name) >=
                (int)sizeof defaults[j])
                return fail(r, e.line, "node name '%.40s...' is too long", name);
            pn = par_names[j] = defaults[j];
        }
        if (!pn)
            continue;
        if (check_fresh(r, &e, pn))
            return -1;
        bool clash = !strcmp(pn, name);
        for (int k = 0; k < j; k++)
            clash |= par_names[k] && !strcmp(pn, par_names[k]);
        if (clash)
            return fail(r, e.line, "duplicate name '%s'", pn);
    }

    int *none = ntc_arena_alloc(r->scratch, sizeof(int) * (size_t)ins.n);
    if (!none)
        return oom(r, e.line);
    for (int j = 0; j < ins.n; j++)
        none[j] = -1;    /* resolved in pass 2 */
    int nh = ntc_graph_add_node(r->g, (ntc_op)op, name, none, ins.n, block);
    if (nh < 0 || ntc_grow((void **)&r->ins, &r->cap_ins, nh + 1, sizeof(in_list)))
        return oom(r, e.line);
    r->ins[nh] = ins;
    ntc_node *n = &r->g->nodes[nh];
    n->a = a;
    n->line = e.line;
    for (int j = 0; info->params[j].name; j++)
        if (par_names[j] && ntc_node_add_param(r->g, nh, info->params[j].name, par_names[j]) < 0)
            return oom(r, e.line);
    return 0;
}

static int read_block(reader *r, xmlNodePtr el)
{
    xelem e;
    if (load_elem(r, el, &e))
        return -1;
    const char *name = need(&e, "name");
    const char *role = need(&e, "role");
    const char *frozen = get(&e, "frozen");
    const char *layer = get(&e, "layer");
    const char *reads = get(&e, "reads");
    if (check_attrs(r, &e, "name, role, frozen, layer, reads") ||
        check_name(r, &e, "block name", name))
        return -1;
    if (ntc_graph_find_block(r->g, name) >= 0)
        return fail(r, e.line, "duplicate block name '%s' (block on line %d)", name,
                    r->g->blocks[ntc_graph_find_block(r->g, name)].line);
    ntc_role rl;
    if (!strcmp(role, "universal"))
        rl = NTC_ROLE_UNIVERSAL;
    else if (!strcmp(role, "task"))
        rl = NTC_ROLE_TASK;
    else
        return fail(r, e.line, "block '%s': unknown role '%s' (expected universal or task)", name, role);
    if (frozen && strcmp(frozen, "true") && strcmp(frozen, "false"))
        return fail(r, e.line, "block '%s': frozen='%s' must be true or false", name, frozen);
    if ((layer && !*layer) || (reads && !*reads))
        return fail(r, e.line, "block '%s': layer and reads must not be empty", name);
    int b = ntc_graph_add_block(r->g, name, rl);
    if (b < 0)
        return oom(r, e.line);
    ntc_block *blk = &r->g->blocks[b];
    blk->line = e.line;
    blk->frozen = frozen && !strcmp(frozen, "true");
    if ((layer && !(blk->layer = ntc_graph_strdup(r->g, layer))) ||
        (reads && !(blk->reads = ntc_graph_strdup(r->g, reads))))
        return oom(r, e.line);
    for (xmlNodePtr c = NULL;;) {
        if (next_child(r, &c, el))
            return -1;
        if (!c)
            return 0;
        const char *tag = qualified(r, c->ns, c->name);
        if (!tag)
            return oom(r, line_of(c));
        if (!strcmp(tag, "node")) {
            if (read_node(r, c, b))
                return -1;
        } else if (!strcmp(tag, "block")) {
            return fail(r, line_of(c), "blocks cannot be nested (<block> inside block '%s')", name);
        } else {
            return fail(r, line_of(c), "unknown element <%s> inside <block> (expected <node>)", tag);
        }
    }
}

static int read_meta(reader *r, xmlNodePtr el)
{
    xelem e;
    if (load_elem(r, el, &e))
        return -1;
    const char *key = need(&e, "key");
    const char *value = need(&e, "value");
    if (check_attrs(r, &e, "key, value") || no_children(r, el))
        return -1;
    if (!*key)
        return fail(r, e.line, "<meta> key must not be empty");
    if (ntc_graph_get_meta(r->g, key))
        return fail(r, e.line, "duplicate meta key '%s'", key);
    if (ntc_graph_set_meta(r->g, key, value))
        return oom(r, e.line);
    return 0;
}

static int read_output(reader *r, xmlNodePtr el)
{
    xelem e;
    if (load_elem(r, el, &e))
        return -1;
    const char *name = need(&e, "name");
    const char *from = need(&e, "from");
    if (check_attrs(r, &e, "name, from") || check_name(r, &e, "output name", name) ||
        check_name(r, &e, "value name", from) || no_children(r, el))
        return -1;
    if (ntc_grow((void **)&r->outs, &r->cap_outs, r->n_outs + 1, sizeof(pending_output)))
        return oom(r, e.line);
    r->outs[r->n_outs++] = (pending_output){name, from, e.line};
    return 0;
}

static int read_graph_element(reader *r, xmlNodePtr root)
{
    int line = line_of(root);
    xelem e;
    if (load_elem(r, root, &e))
        return -1;
    if (strcmp(e.tag, "graph"))
        return fail(r, line, "the root element must be <graph>, not <%s>", e.tag);
    const char *name = need(&e, "name");
    const char *version = need(&e, "ir-version");
    const char *weights = get(&e, "weights");
    if (check_attrs(r, &e, "name, ir-version, weights"))
        return -1;
    int v;
    if (parse_ints(version, &v, 1) != 1 || v != NTC_IR_VERSION)
        return fail(r, line, "unsupported ir-version '%s' (this ntc reads version %d)", version, NTC_IR_VERSION);
    if (weights && !*weights)
        return fail(r, line, "weights must name a file");
    r->g = ntc_graph_new(name);
    if (!r->g || !(r->g->path = ntc_graph_strdup(r->g, r->path)) ||
        (weights && !(r->g->weights = ntc_graph_strdup(r->g, weights))))
        return oom(r, line);
    for (xmlNodePtr c = NULL;;) {
        if (next_child(r, &c, root))
            return -1;
        if (!c)
            return 0;
        const char *tag = qualified(r, c->ns, c->name);
        int rc;
        if (!tag)
            return oom(r, line_of(c));
        if (!strcmp(tag, "input"))
            rc = read_input(r, c);
        else if (!strcmp(tag, "block"))
            rc = read_block(r, c);
        else if (!strcmp(tag, "node"))
            rc = read_node(r, c, -1);
        else if (!strcmp(tag, "output"))
            rc = read_output(r, c);
        else if (!strcmp(tag, "meta"))
            rc = read_meta(r, c);
        else
            rc = fail(r, line_of(c), "unknown element <%s> (expected <meta>, <input>, <block>, <node> or <output>)",
                      tag);
        if (rc)
            return -1;
    }
}

/* ---- pass 2: references ---------------------------------------------------------- */

/* The activation named `name`, or -1 with the error filled. */
static int resolve(reader *r, int line, const char *who, const char *name)
{
    int v = ntc_graph_find_value(r->g, name);
    if (v < 0)
        return fail(r, line, "%s reads '%s', which is not defined", who, name);
    if (r->g->values[v].kind == NTC_VAL_PARAM)
        return fail(r, line, "%s reads '%s', a parameter where an activation is expected", who, name);
    return v;
}

static int resolve_references(reader *r)
{
    ntc_graph *g = r->g;
    char who[1100];
    for (int i = 0; i < g->n_nodes; i++) {
        ntc_node *n = &g->nodes[i];
        snprintf(who, sizeof who, "node '%s'", n->name);
        for (int j = 0; j < n->n_in; j++)
            if ((n->in[j] = resolve(r, n->line, who, r->ins[i].names[j])) < 0)
                return -1;
    }
    for (int i = 0; i < r->n_outs; i++) {
        const pending_output *o = &r->outs[i];
        snprintf(who, sizeof who, "output '%s'", o->name);
        int v = resolve(r, o->line, who, o->from);
        if (v < 0)
            return -1;
        for (int k = 0; k < g->n_outputs; k++)
            if (!strcmp(g->outputs[k].name, o->name))
                return fail(r, o->line, "duplicate output name '%s'", o->name);
        if (ntc_graph_add_output(g, o->name, v) < 0)
            return oom(r, o->line);
    }
    return 0;
}

/* ---- the document ------------------------------------------------------------------ */

static xmlDocPtr parse(reader *r)
{
    size_t len;
    char *text = ntc_read_file(r->path, &len, r->err);
    if (!text)
        return NULL;
    if (len > INT_MAX) {
        ntc_free(text);
        fail(r, 0, "file too large");
        return NULL;
    }
    xmlInitParser();    /* idempotent; libxml2 wants it before first use */
    xmlParserCtxtPtr ctx = xmlNewParserCtxt();
    if (!ctx) {
        ntc_free(text);
        oom(r, 0);
        return NULL;
    }
    /* NOERROR/NOWARNING: the library never prints; the message comes back
     * through the context.  NONET and no entity substitution: a graph file
     * never reaches out of itself. */
    xmlDocPtr doc = xmlCtxtReadMemory(ctx, text, (int)len, r->path, NULL,
                                      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING |
                                          XML_PARSE_BIG_LINES);
    if (!doc || !ctx->wellFormed) {
        const xmlError *xe = xmlCtxtGetLastError(ctx);
        char msg[512];
        snprintf(msg, sizeof msg, "%s", xe && xe->message ? xe->message : "not well-formed");
        size_t n = strlen(msg);
        while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
            msg[--n] = 0;
        fail(r, xe ? xe->line : 0, "malformed XML: %s", msg);
        xmlFreeDoc(doc);
        doc = NULL;
    }
    xmlFreeParserCtxt(ctx);
    ntc_free(text);
    return doc;
}

ntc_graph *ntc_graph_read_xml_opts(const char *path, bool no_weights, ntc_err *err)
{
    reader r = {.path = path, .err = err};
    xmlDocPtr doc = parse(&r);
    if (!doc)
        return NULL;
    r.scratch = ntc_arena_new();
    xmlNodePtr root = xmlDocGetRootElement(doc);
    int rc = !r.scratch ? oom(&r, 0)
             : !root    ? fail(&r, 0, "empty document")
                        : read_graph_element(&r, root);
    if (rc == 0)
        rc = resolve_references(&r);
    ntc_graph *g = r.g;
    ntc_free(r.ins);
    ntc_free(r.outs);
    ntc_arena_free(r.scratch);
    xmlFreeDoc(doc);
    if (rc == 0)
        rc = ntc_graph_infer_shapes(g, err);
    if (rc == 0 && g->weights && !no_weights) {
        char *wpath = ntc_path_sibling(path, g->weights);
        rc = wpath ? ntc_weights_load(g, wpath, err) : ntc_error(err, path, 0, "out of memory");
        ntc_free(wpath);
    }
    if (rc == 0)
        rc = ntc_graph_verify(g, err);
    if (rc) {
        ntc_graph_free(g);
        return NULL;
    }
    return g;
}

ntc_graph *ntc_graph_read_xml(const char *path, ntc_err *err)
{
    return ntc_graph_read_xml_opts(path, false, err);
}
