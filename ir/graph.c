/* Building, editing, copying and compacting graphs. */
#include "ntc/ir.h"
#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

const char *ntc_role_name(ntc_role r)
{
    switch (r) {
    case NTC_ROLE_UNIVERSAL: return "universal";
    case NTC_ROLE_TASK: return "task";
    default: return "none";
    }
}

ntc_graph *ntc_graph_new(const char *name)
{
    ntc_graph *g = ntc_calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->arena = ntc_arena_new();
    if (!g->arena) {
        ntc_free(g);
        return NULL;
    }
    g->name = ntc_arena_strdup(g->arena, name ? name : "graph");
    if (!g->name) {
        ntc_graph_free(g);
        return NULL;
    }
    return g;
}

void ntc_graph_free(ntc_graph *g)
{
    if (!g)
        return;
    for (int i = 0; i < g->n_values; i++)
        if (g->values[i].owned)
            ntc_free(g->values[i].data);
    ntc_mappings_release(g->mappings);
    ntc_free(g->values);
    ntc_free(g->nodes);
    ntc_free(g->blocks);
    ntc_free(g->inputs);
    ntc_free(g->outputs);
    ntc_free(g->meta);
    ntc_arena_free(g->arena);
    ntc_free(g);
}

char *ntc_graph_strdup(ntc_graph *g, const char *s) { return ntc_arena_strdup(g->arena, s); }

static bool name_taken(const ntc_graph *g, const char *name)
{
    return ntc_graph_find_value(g, name) >= 0 || ntc_graph_find_node(g, name) >= 0;
}

static int add_value(ntc_graph *g, const char *name, ntc_value_kind kind)
{
    if (ntc_grow((void **)&g->values, &g->cap_values, g->n_values + 1, sizeof(ntc_value)))
        return -1;
    char *n = ntc_arena_strdup(g->arena, name);
    if (!n)
        return -1;
    ntc_value *v = &g->values[g->n_values];
    memset(v, 0, sizeof *v);
    v->name = n;
    v->kind = kind;
    v->producer = -1;
    return g->n_values++;
}

int ntc_graph_add_input(ntc_graph *g, const char *name, const ntc_shape *shape)
{
    if (name_taken(g, name))
        return -1;
    if (ntc_grow((void **)&g->inputs, &g->cap_inputs, g->n_inputs + 1, sizeof(int)))
        return -1;
    int v = add_value(g, name, NTC_VAL_INPUT);
    if (v < 0)
        return -1;
    g->values[v].shape = *shape;
    g->inputs[g->n_inputs++] = v;
    return v;
}

int ntc_graph_add_param(ntc_graph *g, const char *name)
{
    if (name_taken(g, name))
        return -1;
    return add_value(g, name, NTC_VAL_PARAM);
}

int ntc_graph_add_block(ntc_graph *g, const char *name, ntc_role role)
{
    if (ntc_graph_find_block(g, name) >= 0)
        return -1;
    if (ntc_grow((void **)&g->blocks, &g->cap_blocks, g->n_blocks + 1, sizeof(ntc_block)))
        return -1;
    ntc_block *b = &g->blocks[g->n_blocks];
    memset(b, 0, sizeof *b);
    b->name = ntc_arena_strdup(g->arena, name);
    if (!b->name)
        return -1;
    b->role = role;
    return g->n_blocks++;
}

int ntc_graph_add_node(ntc_graph *g, ntc_op op, const char *name,
                       const int *in, int n_in, int block)
{
    if (name_taken(g, name))
        return -1;
    if (ntc_grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof(ntc_node)))
        return -1;
    int *ins = ntc_arena_alloc(g->arena, sizeof(int) * (size_t)(n_in ? n_in : 1));
    if (!ins)
        return -1;
    memcpy(ins, in, sizeof(int) * (size_t)n_in);
    int v = add_value(g, name, NTC_VAL_ACT);
    if (v < 0)
        return -1;
    ntc_node *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    n->name = g->values[v].name;
    n->op = op;
    n->n_in = n_in;
    n->in = ins;
    for (int i = 0; i < NTC_MAX_PARAMS; i++)
        n->par[i] = -1;
    n->out = v;
    n->block = block;
    ntc_attrs_default(op, &n->a);
    g->values[v].producer = g->n_nodes;
    return g->n_nodes++;
}

int ntc_node_add_param(ntc_graph *g, int node, const char *slot, const char *name)
{
    int s = ntc_op_param_slot(g->nodes[node].op, slot);
    if (s < 0)
        return -1;
    char buf[1024];
    if (!name) {
        snprintf(buf, sizeof buf, "%s.%s", g->nodes[node].name, slot);
        name = buf;
    }
    int v = ntc_graph_add_param(g, name);
    if (v >= 0)
        g->nodes[node].par[s] = v;
    return v;
}

int ntc_graph_add_output(ntc_graph *g, const char *name, int value)
{
    for (int i = 0; i < g->n_outputs; i++)
        if (!strcmp(g->outputs[i].name, name))
            return -1;
    if (ntc_grow((void **)&g->outputs, &g->cap_outputs, g->n_outputs + 1, sizeof(ntc_output)))
        return -1;
    char *n = ntc_arena_strdup(g->arena, name);
    if (!n)
        return -1;
    g->outputs[g->n_outputs].name = n;
    g->outputs[g->n_outputs].value = value;
    return g->n_outputs++;
}

const char *ntc_graph_get_meta(const ntc_graph *g, const char *key)
{
    for (int i = 0; i < g->n_meta; i++)
        if (!strcmp(g->meta[i].key, key))
            return g->meta[i].value;
    return NULL;
}

int ntc_graph_set_meta(ntc_graph *g, const char *key, const char *value)
{
    int i = 0;
    while (i < g->n_meta && strcmp(g->meta[i].key, key))
        i++;
    if (!value) {
        if (i < g->n_meta) {
            memmove(&g->meta[i], &g->meta[i + 1], sizeof(ntc_meta) * (size_t)(g->n_meta - i - 1));
            g->n_meta--;
        }
        return 0;
    }
    char *v = ntc_arena_strdup(g->arena, value);
    if (!v)
        return -1;
    if (i < g->n_meta) {
        g->meta[i].value = v;   /* the old string stays in the arena until the graph goes */
        return 0;
    }
    if (ntc_grow((void **)&g->meta, &g->cap_meta, g->n_meta + 1, sizeof(ntc_meta)))
        return -1;
    char *k = ntc_arena_strdup(g->arena, key);
    if (!k)
        return -1;
    g->meta[g->n_meta].key = k;
    g->meta[g->n_meta++].value = v;
    return 0;
}

/* Linear scans: graphs hold hundreds of nodes, and passes that need speed
 * build their own maps. */
int ntc_graph_find_value(const ntc_graph *g, const char *name)
{
    for (int i = 0; i < g->n_values; i++)
        if (!g->values[i].dead && !strcmp(g->values[i].name, name))
            return i;
    return -1;
}

int ntc_graph_find_node(const ntc_graph *g, const char *name)
{
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].dead && !strcmp(g->nodes[i].name, name))
            return i;
    return -1;
}

int ntc_graph_find_block(const ntc_graph *g, const char *name)
{
    for (int i = 0; i < g->n_blocks; i++)
        if (!g->blocks[i].dead && !strcmp(g->blocks[i].name, name))
            return i;
    return -1;
}

void ntc_graph_replace_uses(ntc_graph *g, int from, int to)
{
    for (int i = 0; i < g->n_nodes; i++) {
        ntc_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        for (int j = 0; j < n->n_in; j++)
            if (n->in[j] == from)
                n->in[j] = to;
    }
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i].value == from)
            g->outputs[i].value = to;
}

int ntc_graph_count_uses(const ntc_graph *g, int v)
{
    int uses = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const ntc_node *n = &g->nodes[i];
        if (n->dead)
            continue;
        for (int j = 0; j < n->n_in; j++)
            uses += n->in[j] == v;
        for (int j = 0; j < NTC_MAX_PARAMS; j++)
            uses += n->par[j] == v;
    }
    for (int i = 0; i < g->n_outputs; i++)
        uses += g->outputs[i].value == v;
    return uses;
}

void ntc_graph_remove_node(ntc_graph *g, int node)
{
    ntc_node *n = &g->nodes[node];
    n->dead = true;
    g->values[n->out].dead = true;
    /* Parameters nobody else reads go with the node. */
    for (int j = 0; j < NTC_MAX_PARAMS; j++) {
        int p = n->par[j];
        if (p >= 0 && ntc_graph_count_uses(g, p) == 0)
            g->values[p].dead = true;
    }
}

void ntc_graph_compact(ntc_graph *g)
{
    int *vmap = ntc_malloc(sizeof(int) * (size_t)(g->n_values + 1));
    int *nmap = ntc_malloc(sizeof(int) * (size_t)(g->n_nodes + 1));
    int *bmap = ntc_malloc(sizeof(int) * (size_t)(g->n_blocks + 1));
    if (!vmap || !nmap || !bmap) {
        /* Compaction is an optimisation of storage only; dead entries are
         * skipped everywhere, so failing to compact is harmless. */
        ntc_free(vmap);
        ntc_free(nmap);
        ntc_free(bmap);
        return;
    }
    int nv = 0, nn = 0, nb = 0;
    for (int i = 0; i < g->n_values; i++) {
        if (g->values[i].dead) {
            if (g->values[i].owned)
                ntc_free(g->values[i].data);
            vmap[i] = -1;
            continue;
        }
        vmap[i] = nv;
        g->values[nv++] = g->values[i];
    }
    for (int i = 0; i < g->n_blocks; i++) {
        bmap[i] = g->blocks[i].dead ? -1 : nb;
        if (!g->blocks[i].dead)
            g->blocks[nb++] = g->blocks[i];
    }
    for (int i = 0; i < g->n_nodes; i++) {
        nmap[i] = g->nodes[i].dead ? -1 : nn;
        if (g->nodes[i].dead)
            continue;
        ntc_node *n = &g->nodes[nn++];
        *n = g->nodes[i];
        for (int j = 0; j < n->n_in; j++)
            n->in[j] = vmap[n->in[j]];
        for (int j = 0; j < NTC_MAX_PARAMS; j++)
            if (n->par[j] >= 0)
                n->par[j] = vmap[n->par[j]];
        n->out = vmap[n->out];
        if (n->block >= 0)
            n->block = bmap[n->block];
    }
    for (int i = 0; i < nv; i++)
        if (g->values[i].producer >= 0)
            g->values[i].producer = nmap[g->values[i].producer];
    int ni = 0;
    for (int i = 0; i < g->n_inputs; i++)
        if (vmap[g->inputs[i]] >= 0)
            g->inputs[ni++] = vmap[g->inputs[i]];
    int no = 0;
    for (int i = 0; i < g->n_outputs; i++)
        if (vmap[g->outputs[i].value] >= 0) {
            g->outputs[no] = g->outputs[i];
            g->outputs[no++].value = vmap[g->outputs[i].value];
        }
    g->n_values = nv;
    g->n_nodes = nn;
    g->n_blocks = nb;
    g->n_inputs = ni;
    g->n_outputs = no;
    ntc_free(vmap);
    ntc_free(nmap);
    ntc_free(bmap);
}

ntc_graph *ntc_graph_clone(const ntc_graph *src)
{
    ntc_graph *g = ntc_graph_new(src->name);
    if (!g)
        return NULL;
#define DUP_ARRAY(field, count, cap, type)                                             \
    if (src->count) {                                                                  \
        g->field = ntc_malloc(sizeof(type) * (size_t)src->count);                      \
        if (!g->field)                                                                 \
            goto fail;                                                                 \
        memcpy(g->field, src->field, sizeof(type) * (size_t)src->count);               \
        g->count = g->cap = src->count;                                                \
    }
    DUP_ARRAY(values, n_values, cap_values, ntc_value)
    for (int i = 0; i < g->n_values; i++)
        g->values[i].owned = false, g->values[i].data = NULL;
    DUP_ARRAY(nodes, n_nodes, cap_nodes, ntc_node)
    DUP_ARRAY(blocks, n_blocks, cap_blocks, ntc_block)
    DUP_ARRAY(inputs, n_inputs, cap_inputs, int)
    DUP_ARRAY(outputs, n_outputs, cap_outputs, ntc_output)
    DUP_ARRAY(meta, n_meta, cap_meta, ntc_meta)
#undef DUP_ARRAY
    ntc_arena *A = g->arena;
#define S(x) do { if ((x) && !((x) = ntc_arena_strdup(A, (x)))) goto fail; } while (0)
    S(g->name);
    if (src->weights && !(g->weights = ntc_arena_strdup(A, src->weights)))
        goto fail;
    if (src->path && !(g->path = ntc_arena_strdup(A, src->path)))
        goto fail;
    for (int i = 0; i < g->n_values; i++) {
        S(g->values[i].name);
        const ntc_value *sv = &src->values[i];
        if (sv->data) {
            size_t n = (size_t)ntc_shape_numel(&sv->shape);
            g->values[i].data = ntc_malloc(n * sizeof(float));
            if (!g->values[i].data)
                goto fail;
            memcpy(g->values[i].data, sv->data, n * sizeof(float));
            g->values[i].owned = true;
        }
    }
    for (int i = 0; i < g->n_nodes; i++) {
        ntc_node *n = &g->nodes[i];
        n->name = g->values[n->out].name;
        int *ins = ntc_arena_alloc(A, sizeof(int) * (size_t)(n->n_in ? n->n_in : 1));
        if (!ins)
            goto fail;
        memcpy(ins, n->in, sizeof(int) * (size_t)n->n_in);
        n->in = ins;
    }
    for (int i = 0; i < g->n_blocks; i++) {
        S(g->blocks[i].name);
        S(g->blocks[i].layer);
        S(g->blocks[i].reads);
    }
    for (int i = 0; i < g->n_outputs; i++)
        S(g->outputs[i].name);
    for (int i = 0; i < g->n_meta; i++) {
        S(g->meta[i].key);
        S(g->meta[i].value);
    }
#undef S
    return g;
fail:
    ntc_graph_free(g);
    return NULL;
}

/* ---- mapped weight files ------------------------------------------------- */

int ntc_mappings_add(ntc_graph *g, void *addr, size_t len)
{
    struct ntc_mapping *m = ntc_malloc(sizeof *m);
    if (!m)
        return -1;
    m->addr = addr;
    m->len = len;
    m->next = g->mappings;
    g->mappings = m;
    return 0;
}

void ntc_mappings_release(struct ntc_mapping *m)
{
    while (m) {
        struct ntc_mapping *next = m->next;
        munmap(m->addr, m->len);
        ntc_free(m);
        m = next;
    }
}
