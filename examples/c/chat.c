/*
 * chat.c - a multi-turn chat: one user message per line of standard input,
 * one reply per line of output, with the model's chat template (or a built-in
 * one, --template chatml|llama2|llama3|gemma).
 *
 *   chat -m MODEL.ember [--template NAME] [--system TEXT] [-n MAX_TOKENS] [--ctx N]
 *
 * Prints the same replies as `ember chat` reading the same lines (greedy): each
 * turn renders the whole conversation, reuses the cached tokens up to the first
 * difference and feeds only the rest; old turns are dropped when the context
 * runs out, and a full context shifts, keeping the system prompt.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember.h"

#define MAX_MESSAGES 256
#define LINE_BYTES 4096

typedef struct chat {
    ember_model *model;
    ember_session *session;
    const char *tmpl; /* NULL: the model's */
    ember_chat_message msgs[MAX_MESSAGES];
    size_t n_msgs, first; /* first: index of the first droppable message */
    char *text;           /* rendered prompt */
    size_t text_cap;
    ember_token *ids;
    size_t ids_cap, n_ids;
    /* The reply being streamed. */
    char *reply;
    size_t reply_len, reply_cap;
} chat;

static int fail(const char *what, ember_status st) {
    fprintf(stderr, "chat: %s: %s (%s)\n", what, ember_last_error(), ember_status_name(st));
    return 1;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* Renders the conversation (add_generation_prompt) and tokenizes it into c->ids. */
static ember_status encode(chat *c) {
    size_t len = 0;
    ember_status st;
    st = ember_chat_render(c->model, c->tmpl, c->msgs, c->n_msgs, 1, c->text, c->text_cap, &len);
    if (st == EMBER_ERR_BUFFER_TOO_SMALL) {
        char *t = realloc(c->text, len + 1);
        if (!t) return EMBER_ERR_INTERNAL;
        c->text = t;
        c->text_cap = len + 1;
        st = ember_chat_render(c->model, c->tmpl, c->msgs, c->n_msgs, 1, c->text, c->text_cap,
                               &len);
    }
    if (st != EMBER_OK) return st;
    st = ember_tokenize(c->model, c->text, EMBER_TOKENIZE_NO_BOS, c->ids, c->ids_cap, &c->n_ids);
    if (st == EMBER_ERR_BUFFER_TOO_SMALL) {
        ember_token *t = realloc(c->ids, c->n_ids * sizeof *t);
        if (!t) return EMBER_ERR_INTERNAL;
        c->ids = t;
        c->ids_cap = c->n_ids;
        st = ember_tokenize(c->model, c->text, EMBER_TOKENIZE_NO_BOS, c->ids, c->ids_cap, &c->n_ids);
    }
    return st;
}

static int on_token(void *user_data, ember_token token, const char *text, size_t len) {
    chat *c = user_data;
    (void)token;
    if (c->reply_len + len + 1 > c->reply_cap) {
        size_t cap = 2 * (c->reply_len + len + 1);
        char *r = realloc(c->reply, cap);
        if (!r) return 1; /* stop */
        c->reply = r;
        c->reply_cap = cap;
    }
    memcpy(c->reply + c->reply_len, text, len);
    c->reply_len += len;
    c->reply[c->reply_len] = '\0';
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static void drop_message(chat *c, size_t i) {
    free((char *)c->msgs[i].content);
    memmove(&c->msgs[i], &c->msgs[i + 1], (c->n_msgs - i - 1) * sizeof c->msgs[0]);
    c->n_msgs--;
}

/* One user turn: prints the reply and appends it (trimmed) to the conversation. */
static int turn(chat *c, const char *user, size_t ctx, size_t reserve,
                const ember_generate_options *opts) {
    const ember_token *cached;
    size_t n_cached, common = 0;
    char *start, *end;
    ember_status st;

    if (c->n_msgs + 2 > MAX_MESSAGES) {
        drop_message(c, c->first);
        while (c->n_msgs > c->first && strcmp(c->msgs[c->first].role, "user") != 0)
            drop_message(c, c->first);
    }
    c->msgs[c->n_msgs].role = "user";
    c->msgs[c->n_msgs].content = dup_str(user);
    c->n_msgs++;
    if ((st = encode(c)) != EMBER_OK) return fail("rendering the conversation", st);
    /* Drop whole exchanges so the history still starts with a user message
     * (templates such as Llama 2's require alternating roles). */
    while (c->n_ids + reserve > ctx && c->n_msgs > c->first + 1) {
        drop_message(c, c->first);
        while (c->n_msgs > c->first + 1 && strcmp(c->msgs[c->first].role, "user") != 0)
            drop_message(c, c->first);
        if ((st = encode(c)) != EMBER_OK) return fail("rendering the conversation", st);
    }
    /* Reuse the cached prefix; feed at least one token. */
    if ((st = ember_session_tokens(c->session, &cached, &n_cached)) != EMBER_OK)
        return fail("session tokens", st);
    while (common < n_cached && common < c->n_ids && cached[common] == c->ids[common]) common++;
    if (common > c->n_ids - 1) common = c->n_ids - 1;
    if ((st = ember_session_truncate(c->session, common)) != EMBER_OK) return fail("truncate", st);

    c->reply_len = 0;
    if (c->reply) c->reply[0] = '\0';
    st = ember_generate(c->session, c->ids + common, c->n_ids - common, NULL, opts, on_token, c,
                        NULL);
    printf("\n");
    fflush(stdout);
    if (st != EMBER_OK) return fail("generate", st);

    /* Trim the reply as the assistant message. */
    start = c->reply ? c->reply : "";
    while (*start && isspace((unsigned char)*start)) start++;
    end = start + strlen(start);
    while (end > start && isspace((unsigned char)end[-1])) end--;
    *end = '\0';
    c->msgs[c->n_msgs].role = "assistant";
    c->msgs[c->n_msgs].content = dup_str(start);
    c->n_msgs++;
    return 0;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *template_name = NULL, *system = NULL;
    unsigned max_tokens = 512, ctx_arg = 0;
    size_t ctx, reserve, keep = 0, i, n;
    int rc = 1, a;
    char line[LINE_BYTES];
    chat c;
    ember_model_info info;
    ember_session_config scfg;
    ember_generate_options opts;
    ember_status st;

    memset(&c, 0, sizeof c);
    for (a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "-m") && a + 1 < argc) model_path = argv[++a];
        else if (!strcmp(argv[a], "--template") && a + 1 < argc) template_name = argv[++a];
        else if (!strcmp(argv[a], "--system") && a + 1 < argc) system = argv[++a];
        else if (!strcmp(argv[a], "-n") && a + 1 < argc) max_tokens = (unsigned)atoi(argv[++a]);
        else if (!strcmp(argv[a], "--ctx") && a + 1 < argc) ctx_arg = (unsigned)atoi(argv[++a]);
        else {
            fprintf(stderr, "usage: %s -m MODEL [--template NAME] [--system TEXT] [-n N] "
                            "[--ctx N] < lines\n", argv[0]);
            return 2;
        }
    }
    if (!model_path) {
        fprintf(stderr, "chat: -m MODEL is required\n");
        return 2;
    }
    if ((st = ember_model_load(model_path, &c.model)) != EMBER_OK) return fail("loading", st);
    info.struct_size = sizeof info;
    if ((st = ember_model_info_get(c.model, &info)) != EMBER_OK) { rc = fail("info", st); goto out; }
    if (template_name) {
        c.tmpl = ember_chat_builtin_template(template_name);
        if (!c.tmpl) {
            fprintf(stderr, "chat: unknown template %s\n", template_name);
            goto out;
        }
    } else if (!info.has_chat_template) {
        fprintf(stderr, "chat: the model has no chat template; choose one with --template\n");
        goto out;
    }

    /* Tokens a context shift keeps: the system prompt, or the BOS token. */
    if (system) {
        size_t len = 0;
        c.msgs[0].role = "system";
        c.msgs[0].content = dup_str(system);
        c.n_msgs = c.first = 1;
        st = ember_chat_render(c.model, c.tmpl, c.msgs, 1, 0, NULL, 0, &len);
        if (st == EMBER_ERR_BUFFER_TOO_SMALL) {
            c.text = malloc(len + 1);
            c.text_cap = len + 1;
            st = ember_chat_render(c.model, c.tmpl, c.msgs, 1, 0, c.text, c.text_cap, &len);
        }
        if (st != EMBER_OK) { rc = fail("rendering the system prompt", st); goto out; }
        st = ember_tokenize(c.model, c.text, EMBER_TOKENIZE_NO_BOS, NULL, 0, &keep);
    } else {
        /* 1 if the template writes BOS: its rendering of one message starts with it. */
        ember_chat_message probe = {"user", "x"};
        ember_token bos = EMBER_TOKEN_NONE, first[1] = {EMBER_TOKEN_NONE};
        size_t len = 0, n_first = 0;
        st = ember_chat_render(c.model, c.tmpl, &probe, 1, 0, NULL, 0, &len);
        if (st == EMBER_ERR_BUFFER_TOO_SMALL) {
            c.text = malloc(len + 1);
            c.text_cap = len + 1;
            st = ember_chat_render(c.model, c.tmpl, &probe, 1, 0, c.text, c.text_cap, &len);
        }
        if (st == EMBER_OK)
            st = ember_tokenize(c.model, c.text, EMBER_TOKENIZE_NO_BOS, first, 1, &n_first);
        if (st == EMBER_OK || st == EMBER_ERR_BUFFER_TOO_SMALL)
            st = ember_model_special_token(c.model, EMBER_SPECIAL_BOS, &bos);
        keep = st == EMBER_OK && bos != EMBER_TOKEN_NONE && first[0] == bos;
        st = EMBER_OK; /* a template that cannot render the probe keeps nothing */
    }
    if (st != EMBER_OK && st != EMBER_ERR_BUFFER_TOO_SMALL) { rc = fail("tokenize", st); goto out; }

    ctx = ctx_arg ? ctx_arg : (info.max_context < 4096 ? info.max_context : 4096);
    ember_session_config_default(&scfg, sizeof scfg);
    scfg.context = (uint32_t)ctx;
    scfg.context_policy = EMBER_CONTEXT_SHIFT;
    scfg.keep = (uint32_t)(keep < ctx - 2 ? keep : ctx - 2);
    if ((st = ember_session_new(c.model, &scfg, &c.session)) != EMBER_OK) {
        rc = fail("creating the session", st);
        goto out;
    }
    ember_generate_options_default(&opts, sizeof opts);
    opts.max_tokens = max_tokens;
    reserve = max_tokens < ctx / 4 ? max_tokens : ctx / 4;

    rc = 0;
    while (fgets(line, sizeof line, stdin)) {
        n = strlen(line);
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
        for (i = 0; i < n && isspace((unsigned char)line[i]); i++) {}
        if (i == n) continue; /* blank line */
        if (turn(&c, line, ctx, reserve, &opts) != 0) rc = 1;
    }
out:
    for (i = 0; i < c.n_msgs; i++) free((char *)c.msgs[i].content);
    free(c.text);
    free(c.ids);
    free(c.reply);
    ember_session_free(c.session);
    ember_model_free(c.model);
    return rc;
}
