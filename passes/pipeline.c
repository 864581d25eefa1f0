/* Pipelines: "NAME[:KEY=VALUE]...[,NAME[:KEY=VALUE]...]...", checked
 * against the registry when parsed so a typo fails before any pass runs.
 * ':' and ',' need no quoting in a shell, unlike LLVM's "pass<opts>". */
#include "internal.h"

#include <string.h>

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        *--e = 0;
    return s;
}

static int unknown_pass(const ntc_pass_registry *r, const char *name, ntc_err *err)
{
    char known[768] = "";
    size_t at = 0;
    for (int i = 0; i < ntc_pass_count(r) && at < sizeof known; i++) {
        int w = snprintf(known + at, sizeof known - at, "%s%s", i ? ", " : "", ntc_pass_at(r, i, NULL)->name);
        at += w > 0 ? (size_t)w : 0;
    }
    return ntc_error(err, NULL, 0, "unknown pass '%s'; known passes: %s", name, known);
}

static bool pass_takes(const ntc_pass *p, const char *key)
{
    for (const ntc_pass_option *o = p->options; o && o->name; o++)
        if (!strcmp(o->name, key))
            return true;
    return false;
}

static int no_such_option(const ntc_pass *p, const char *key, ntc_err *err)
{
    if (!p->options || !p->options[0].name)
        return ntc_error(err, NULL, 0, "pass '%s' takes no options, got '%s'", p->name, key);
    char list[512] = "";
    size_t at = 0;
    for (const ntc_pass_option *o = p->options; o->name && at < sizeof list; o++) {
        int w = snprintf(list + at, sizeof list - at, "%s%s", o == p->options ? "" : ", ", o->name);
        at += w > 0 ? (size_t)w : 0;
    }
    return ntc_error(err, NULL, 0, "pass '%s' has no option '%s' (its options: %s)", p->name, key, list);
}

/* Parses "KEY=VALUE[:KEY=VALUE]..." (already split off the name) into it. */
static int parse_options(ntc_pipeline_item *it, char *s, ntc_err *err)
{
    int n = 1;
    for (char *c = s; *c; c++)
        n += *c == ':';
    it->opts = ntc_calloc((size_t)n, sizeof *it->opts);
    if (!it->opts)
        return ntc_error(err, NULL, 0, "out of memory");
    for (char *tok = s, *next; tok; tok = next) {
        next = strchr(tok, ':');
        if (next)
            *next++ = 0;
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok)
            return ntc_error(err, NULL, 0, "pass '%s': option '%s' is not KEY=VALUE", it->pass->name, tok);
        *eq = 0;
        if (!pass_takes(it->pass, tok))
            return no_such_option(it->pass, tok, err);
        for (int i = 0; i < it->n_opts; i++)
            if (!strcmp(it->opts[i].key, tok))
                return ntc_error(err, NULL, 0, "pass '%s': option '%s' given twice", it->pass->name, tok);
        it->opts[it->n_opts].key = tok;
        it->opts[it->n_opts].value = eq + 1;
        it->n_opts++;
    }
    return 0;
}

ntc_pipeline *ntc_pipeline_parse(const ntc_pass_registry *r, const char *text, ntc_err *err)
{
    ntc_pipeline *p = ntc_calloc(1, sizeof *p);
    if (!p || !(p->text = ntc_strdup(text ? text : ""))) {
        ntc_free(p);
        ntc_error(err, NULL, 0, "out of memory");
        return NULL;
    }
    if (!*trim(p->text)) {
        ntc_error(err, NULL, 0, "empty pass pipeline");
        goto fail;
    }
    int n = 1;
    for (char *c = p->text; *c; c++)
        n += *c == ',';
    p->items = ntc_calloc((size_t)n, sizeof *p->items);
    if (!p->items) {
        ntc_error(err, NULL, 0, "out of memory");
        goto fail;
    }
    char *tok = p->text, *next;
    for (int k = 1; tok; tok = next, k++) {
        next = strchr(tok, ',');
        if (next)
            *next++ = 0;
        char *item = trim(tok);
        char *colon = strchr(item, ':');
        if (colon)
            *colon = 0;
        char *name = trim(item);
        if (!*name) {
            ntc_error(err, NULL, 0, "pass pipeline '%s': item %d names no pass", text, k);
            goto fail;
        }
        ntc_pipeline_item *it = &p->items[p->n_items++];
        it->pass = ntc_pass_find(r, name);
        if (!it->pass) {
            unknown_pass(r, name, err);
            goto fail;
        }
        if (colon && parse_options(it, colon + 1, err))
            goto fail;
    }
    return p;
fail:
    ntc_pipeline_free(p);
    return NULL;
}

void ntc_pipeline_free(ntc_pipeline *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n_items; i++)
        ntc_free(p->items[i].opts);
    ntc_free(p->items);
    ntc_free(p->text);
    ntc_free(p);
}

int ntc_pipeline_length(const ntc_pipeline *p) { return p->n_items; }
const ntc_pass *ntc_pipeline_pass(const ntc_pipeline *p, int i) { return p->items[i].pass; }
int ntc_pipeline_runs(const ntc_pipeline *p, int i) { return p->items[i].runs; }
bool ntc_pipeline_changed(const ntc_pipeline *p, int i) { return p->items[i].changed; }
