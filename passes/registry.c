/* The pass registry: built-in passes from builtin.def plus the passes of
 * loaded plugins, looked up by name. */
#include "internal.h"

#include <string.h>

#define PASS(c_name) extern const ntc_pass ntc_pass_##c_name;
#include "builtin.def"
#undef PASS

static const ntc_pass *const builtin_passes[] = {
#define PASS(c_name) &ntc_pass_##c_name,
#include "builtin.def"
#undef PASS
};

ntc_pass_registry *ntc_pass_registry_new(ntc_err *err)
{
    ntc_pass_registry *r = ntc_calloc(1, sizeof *r);
    if (!r) {
        ntc_error(err, NULL, 0, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < sizeof builtin_passes / sizeof builtin_passes[0]; i++)
        if (ntc_pass_register(r, builtin_passes[i], err)) {
            ntc_pass_registry_free(r);
            return NULL;
        }
    return r;
}

void ntc_pass_registry_free(ntc_pass_registry *r)
{
    if (!r)
        return;
    ntc_plugins_unload(r);
    ntc_free(r->entries);
    ntc_free(r);
}

/* Names appear in pipelines, where ',' ':' '=' and spaces separate things. */
static bool good_name(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return false;
    return true;
}

static int check_descriptor(const ntc_pass *p, ntc_err *err)
{
    if (p->api_version != NTC_PASS_API_VERSION)
        return ntc_error(err, NULL, 0, "pass '%s' uses pass API version %d, this ntc implements version %d",
                         p->name && good_name(p->name) ? p->name : "?", p->api_version,
                         NTC_PASS_API_VERSION);
    if (!good_name(p->name))
        return ntc_error(err, NULL, 0, "pass name '%s' is not valid (letters, digits, '-', '_', '.')",
                         p->name ? p->name : "(null)");
    if (!p->description || !p->run)
        return ntc_error(err, NULL, 0, "pass '%s' lacks a %s", p->name, p->run ? "description" : "run function");
    if (!p->modes || (p->modes & ~NTC_PASS_ANY))
        return ntc_error(err, NULL, 0, "pass '%s' has modes %#x; use NTC_PASS_TRAINING and/or NTC_PASS_INFERENCE",
                         p->name, p->modes);
    for (const ntc_pass_option *o = p->options; o && o->name; o++) {
        if (!good_name(o->name))
            return ntc_error(err, NULL, 0, "pass '%s' has an option with a bad name '%s'", p->name, o->name);
        for (const ntc_pass_option *q = p->options; q < o; q++)
            if (!strcmp(q->name, o->name))
                return ntc_error(err, NULL, 0, "pass '%s' lists option '%s' twice", p->name, o->name);
    }
    return 0;
}

int ntc_pass_register_from(ntc_pass_registry *r, const ntc_pass *p, int plugin, ntc_err *err)
{
    if (check_descriptor(p, err))
        return -1;
    for (int i = 0; i < r->n_entries; i++)
        if (!strcmp(r->entries[i].pass->name, p->name)) {
            int other = r->entries[i].plugin;
            return ntc_error(err, NULL, 0, "pass '%s' is already registered (%s%s)", p->name,
                             other < 0 ? "built in" : "by plugin ",
                             other < 0 ? "" : r->plugins[other].path);
        }
    if (ntc_grow((void **)&r->entries, &r->cap_entries, r->n_entries + 1, sizeof *r->entries))
        return ntc_error(err, NULL, 0, "out of memory");
    r->entries[r->n_entries].pass = p;
    r->entries[r->n_entries].plugin = plugin;
    r->n_entries++;
    return 0;
}

int ntc_pass_register(ntc_pass_registry *r, const ntc_pass *p, ntc_err *err)
{
    return ntc_pass_register_from(r, p, -1, err);
}

const ntc_pass *ntc_pass_find(const ntc_pass_registry *r, const char *name)
{
    for (int i = 0; i < r->n_entries; i++)
        if (!strcmp(r->entries[i].pass->name, name))
            return r->entries[i].pass;
    return NULL;
}

int ntc_pass_count(const ntc_pass_registry *r) { return r->n_entries; }

const ntc_pass *ntc_pass_at(const ntc_pass_registry *r, int i, const char **origin)
{
    if (i < 0 || i >= r->n_entries)
        return NULL;
    if (origin)
        *origin = r->entries[i].plugin < 0 ? NULL : r->plugins[r->entries[i].plugin].path;
    return r->entries[i].pass;
}
