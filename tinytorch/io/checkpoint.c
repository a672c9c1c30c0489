/* checkpoint.c - model + optimizer + step + RNG + config in one safetensors file. */
#include "checkpoint.h"

#include "../internal.h"
#include "../rng.h"
#include "json.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>

static const char *const RESERVED[] = {"format", "step", "rng", "optim", "config"};
#define N_RESERVED ((int)(sizeof RESERVED / sizeof RESERVED[0]))
#define OPTIM_PREFIX "optim."

static bool starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* A float printed as the shortest decimal that strtod + (float) gives back exactly
 * ("0.01", not "0.0099999997764825821"); 17 digits always do as the last resort. */
static int put_float(char *b, size_t cap, const char *key, float v) {
    char num[40];
    for (int digits = 6; digits <= 17; digits++) {
        snprintf(num, sizeof num, "%.*g", digits, (double)v);
        if ((float)strtod(num, NULL) == v) break;
    }
    return snprintf(b, cap, "\"%s\": %s", key, num);
}

tt_status tt_checkpoint_save(const char *path, const tt_params *model, const tt_optim *opt,
                             long step, const char *config_json, int n_extra,
                             const tt_kv *extra) {
    if (!path || !model || n_extra < 0 || (n_extra && !extra))
        return tt_fail(TT_ERR_ARG, "checkpoint_save: invalid arguments");
    for (int i = 0; i < n_extra; i++) {
        if (!extra[i].key || !extra[i].value)
            return tt_fail(TT_ERR_ARG, "checkpoint_save '%s': extra metadata %d is NULL", path, i);
        for (int r = 0; r < N_RESERVED; r++)
            if (strcmp(extra[i].key, RESERVED[r]) == 0)
                return tt_fail(TT_ERR_ARG,
                               "checkpoint_save '%s': metadata key '%s' is reserved", path,
                               extra[i].key);
    }
    for (int i = 0; i < model->n; i++)
        if (starts_with(model->t[i]->name, OPTIM_PREFIX))
            return tt_fail(TT_ERR_ARG,
                           "checkpoint_save '%s': parameter '%s' uses the reserved prefix "
                           "'optim.'",
                           path, model->t[i]->name);
    if (config_json) {
        char err[200];
        tt_json *j = tt_json_parse(config_json, strlen(config_json), err, sizeof err);
        if (!j) return tt_fail(TT_ERR_ARG, "checkpoint_save '%s': config is not JSON: %s", path, err);
        tt_json_free(j);
    }

    /* metadata */
    char step_s[32], rng_s[160], optim_s[512];
    snprintf(step_s, sizeof step_s, "%ld", step);
    const tt_rng *r = tt_rng_global();
    snprintf(rng_s, sizeof rng_s, "{\"state\": \"%llu\", \"has_spare\": \"%d\", \"spare\": \"%.17g\"}",
             (unsigned long long)r->state, r->has_spare ? 1 : 0, r->spare);
    int n_meta = 0;
    tt_kv *meta = tt_xmalloc(((size_t)n_extra + N_RESERVED) * sizeof *meta);
    meta[n_meta++] = (tt_kv){"format", TT_CHECKPOINT_FORMAT};
    meta[n_meta++] = (tt_kv){"step", step_s};
    meta[n_meta++] = (tt_kv){"rng", rng_s};
    if (opt) {
        size_t k = 0, cap = sizeof optim_s;
        k += (size_t)snprintf(optim_s + k, cap - k, "{\"kind\": \"%s\", ",
                              opt->kind == TT_OPTIM_SGD ? "sgd" : "adamw");
        k += (size_t)put_float(optim_s + k, cap - k, "lr", opt->lr);
        k += (size_t)snprintf(optim_s + k, cap - k, ", ");
        k += (size_t)put_float(optim_s + k, cap - k, "momentum", opt->momentum);
        k += (size_t)snprintf(optim_s + k, cap - k, ", \"nesterov\": %s, ",
                              opt->nesterov ? "true" : "false");
        k += (size_t)put_float(optim_s + k, cap - k, "beta1", opt->beta1);
        k += (size_t)snprintf(optim_s + k, cap - k, ", ");
        k += (size_t)put_float(optim_s + k, cap - k, "beta2", opt->beta2);
        k += (size_t)snprintf(optim_s + k, cap - k, ", ");
        k += (size_t)put_float(optim_s + k, cap - k, "eps", opt->eps);
        k += (size_t)snprintf(optim_s + k, cap - k, ", ");
        k += (size_t)put_float(optim_s + k, cap - k, "weight_decay", opt->weight_decay);
        snprintf(optim_s + k, cap - k, ", \"step\": %ld}", opt->step);
        meta[n_meta++] = (tt_kv){"optim", optim_s};
    }
    if (config_json) meta[n_meta++] = (tt_kv){"config", config_json};
    for (int i = 0; i < n_extra; i++) meta[n_meta++] = extra[i];

    /* tensors: the model's, then the optimizer's */
    int n_opt = opt ? opt->state.n : 0;
    tt_tensor **all = tt_xmalloc(((size_t)model->n + (size_t)n_opt + 1) * sizeof *all);
    for (int i = 0; i < model->n; i++) all[i] = model->t[i];
    for (int i = 0; i < n_opt; i++) all[model->n + i] = opt->state.t[i];
    tt_status s = tt_safetensors_save(path, model->n + n_opt, all, n_meta, meta);
    free(all);
    free(meta);
    return s;
}

/* ---- loading: parse and validate everything first -------------------------------------- */

typedef struct parsed {
    long step;
    tt_rng rng;
    /* optimizer settings */
    tt_optim_kind kind;
    float lr, momentum, beta1, beta2, eps, weight_decay;
    bool nesterov;
    long opt_step;
} parsed;

/* a decimal integer in [lo, hi], whole string */
static bool parse_long(const char *s, long lo, long hi, long *out) {
    if (!s || !*s || (*s != '-' && (*s < '0' || *s > '9'))) return false;
    errno = 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static const char *json_str(const tt_json *o, const char *key) {
    const tt_json *j = tt_json_get(o, key);
    return j && j->type == TT_JSON_STRING ? j->string : NULL;
}

static tt_status parse_rng(const char *text, tt_rng *r) {
    if (!text) return tt_fail(TT_ERR_FORMAT, "no \"rng\" metadata");
    char err[200];
    tt_json *j = tt_json_parse(text, strlen(text), err, sizeof err);
    if (!j) return tt_fail(TT_ERR_FORMAT, "\"rng\" metadata is not JSON: %s", err);
    const char *st = json_str(j, "state"), *hs = json_str(j, "has_spare"),
               *sp = json_str(j, "spare");
    tt_status s = TT_OK;
    char *end = NULL;
    if (!st || !hs || !sp) {
        s = tt_fail(TT_ERR_FORMAT, "\"rng\" metadata needs string fields state, has_spare, spare");
        goto done;
    }
    /* state: all digits, fits in 64 bits */
    errno = 0;
    unsigned long long v = strtoull(st, &end, 10);
    if (!*st || st[0] < '0' || st[0] > '9' || *end || errno) {
        s = tt_fail(TT_ERR_FORMAT, "\"rng\" state '%.40s' is not a 64-bit decimal integer", st);
        goto done;
    }
    r->state = (uint64_t)v;
    if (strcmp(hs, "0") != 0 && strcmp(hs, "1") != 0) {
        s = tt_fail(TT_ERR_FORMAT, "\"rng\" has_spare '%.40s' is not 0 or 1", hs);
        goto done;
    }
    r->has_spare = hs[0] == '1';
    errno = 0;
    double d = strtod(sp, &end);
    if (!*sp || *end || !isfinite(d)) {
        s = tt_fail(TT_ERR_FORMAT, "\"rng\" spare '%.40s' is not a finite number", sp);
        goto done;
    }
    r->spare = d;
done:
    tt_json_free(j);
    return s;
}

static bool json_float(const tt_json *o, const char *key, float *out) {
    const tt_json *j = tt_json_get(o, key);
    if (!j || j->type != TT_JSON_NUMBER) return false;
    *out = (float)j->number;
    return true;
}

static tt_status parse_optim(const char *text, const tt_optim *opt, parsed *p) {
    if (!text) return tt_fail(TT_ERR_MISMATCH, "the checkpoint has no optimizer state (no \"optim\")");
    char err[200];
    tt_json *j = tt_json_parse(text, strlen(text), err, sizeof err);
    if (!j) return tt_fail(TT_ERR_FORMAT, "\"optim\" metadata is not JSON: %s", err);
    tt_status s = TT_OK;
    const char *kind = json_str(j, "kind");
    const tt_json *nest = tt_json_get(j, "nesterov"), *step = tt_json_get(j, "step");
    const char *mine = opt->kind == TT_OPTIM_SGD ? "sgd" : "adamw";
    if (!kind || (strcmp(kind, "sgd") != 0 && strcmp(kind, "adamw") != 0)) {
        s = tt_fail(TT_ERR_FORMAT, "\"optim\" metadata has no valid \"kind\"");
    } else if (strcmp(kind, mine) != 0) {
        s = tt_fail(TT_ERR_MISMATCH, "the checkpoint's optimizer is %s, this optimizer is %s",
                    kind, mine);
    } else if (!json_float(j, "lr", &p->lr) || !json_float(j, "momentum", &p->momentum) ||
               !json_float(j, "beta1", &p->beta1) || !json_float(j, "beta2", &p->beta2) ||
               !json_float(j, "eps", &p->eps) || !json_float(j, "weight_decay", &p->weight_decay) ||
               !nest || nest->type != TT_JSON_BOOL || !step || step->type != TT_JSON_NUMBER ||
               step->number < 0 || step->number != floor(step->number) ||
               step->number > 9007199254740992.0) {
        s = tt_fail(TT_ERR_FORMAT, "\"optim\" metadata lacks a valid lr, momentum, nesterov, "
                                   "beta1, beta2, eps, weight_decay or step");
    } else {
        p->kind = opt->kind;
        p->nesterov = nest->boolean;
        p->opt_step = (long)step->number;
    }
    tt_json_free(j);
    return s;
}

/* strict: every tensor outside "optim." is a model parameter, every "optim." tensor is a
 * state tensor of opt (when loading an optimizer). */
static tt_status check_no_extra(const tt_safetensors *st, const tt_params *model,
                                const tt_optim *opt) {
    for (int i = 0; i < st->n; i++) {
        const char *name = st->tensors[i]->name;
        if (starts_with(name, OPTIM_PREFIX)) {
            if (opt && !tt_params_find(&opt->state, name))
                return tt_fail(TT_ERR_MISMATCH,
                               "unexpected optimizer tensor '%s' in the file (this optimizer has "
                               "no such state)",
                               name);
        } else if (!tt_params_find(model, name)) {
            return tt_fail(TT_ERR_MISMATCH,
                           "unexpected tensor '%s' in the file (the model has no such parameter)",
                           name);
        }
    }
    return TT_OK;
}

static tt_status validate(const tt_safetensors *st, const tt_params *model, const tt_optim *opt,
                          parsed *p) {
    const char *fmt = tt_safetensors_meta(st, "format");
    if (!fmt || strcmp(fmt, TT_CHECKPOINT_FORMAT) != 0)
        return tt_fail(TT_ERR_FORMAT, "not a tinytorch checkpoint (format '%.40s', expected '%s')",
                       fmt ? fmt : "(none)", TT_CHECKPOINT_FORMAT);
    const char *step = tt_safetensors_meta(st, "step");
    if (!parse_long(step, 0, LONG_MAX, &p->step))
        return tt_fail(TT_ERR_FORMAT, "\"step\" metadata '%.40s' is not a non-negative integer",
                       step ? step : "(none)");
    tt_status s = parse_rng(tt_safetensors_meta(st, "rng"), &p->rng);
    if (s != TT_OK) return s;
    s = tt_params_check(model, st, NULL, false);
    if (s != TT_OK) return s;
    if (opt) {
        s = parse_optim(tt_safetensors_meta(st, "optim"), opt, p);
        if (s != TT_OK) return s;
        s = tt_params_check(&opt->state, st, NULL, false);
        if (s != TT_OK) return s;
    }
    return check_no_extra(st, model, opt);
}

static tt_status fail_in_file(tt_status st, const char *path) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", tt_last_error());
    return tt_fail(st, "'%s': %s", path, msg);
}

tt_status tt_checkpoint_load(const char *path, tt_params *model, tt_optim *opt, long *step,
                             char **config_json, tt_safetensors *raw_out) {
    if (raw_out) memset(raw_out, 0, sizeof *raw_out);
    if (config_json) *config_json = NULL;
    if (!path || !model) return tt_fail(TT_ERR_ARG, "checkpoint_load: invalid arguments");
    tt_safetensors st;
    tt_status s = tt_safetensors_load(path, &st);
    if (s != TT_OK) return s;
    parsed p;
    memset(&p, 0, sizeof p);
    s = validate(&st, model, opt, &p);
    if (s != TT_OK) {
        tt_safetensors_free(&st);
        return fail_in_file(s, path);
    }
    /* everything checked: copy */
    tt_params_copy_from(model, &st, NULL, false);
    if (opt) {
        tt_params_copy_from(&opt->state, &st, NULL, false);
        opt->lr = p.lr;
        opt->momentum = p.momentum;
        opt->nesterov = p.nesterov;
        opt->beta1 = p.beta1;
        opt->beta2 = p.beta2;
        opt->eps = p.eps;
        opt->weight_decay = p.weight_decay;
        opt->step = p.opt_step;
    }
    *tt_rng_global() = p.rng;
    if (step) *step = p.step;
    if (config_json) {
        const char *c = tt_safetensors_meta(&st, "config");
        if (c) {
            *config_json = strdup(c);
            if (!*config_json) abort();
        }
    }
    if (raw_out)
        *raw_out = st;
    else
        tt_safetensors_free(&st);
    return TT_OK;
}
