/*
 * misuse.c - the C API under misuse: NULL handles and pointers, zero sizes,
 * too-small buffers and arenas, bad struct sizes, unknown paths, corrupt
 * files, out-of-range tokens, a full context, cancellation, calls on a
 * session from its own callback, double free(NULL). Every call must fail
 * cleanly with the documented status and a message; run under valgrind it
 * must show no errors and no leaks.
 *
 *   misuse MODEL.ember SCRATCH_DIR
 * Exit status 0 when every check passes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember.h"

static int failures = 0;

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond)) {                                                             \
            fprintf(stderr, "misuse.c:%d: check failed: %s (last error: %s)\n",    \
                    __LINE__, #cond, ember_last_error());                          \
            failures++;                                                            \
        }                                                                          \
    } while (0)

/* `call` returns `status` and leaves a non-empty message. */
#define EXPECT(call, status)                                                       \
    do {                                                                           \
        ember_status st_ = (call);                                                 \
        if (st_ != (status) || (st_ != EMBER_OK && ember_last_error()[0] == '\0')) { \
            fprintf(stderr, "misuse.c:%d: %s returned %s, expected %s (%s)\n",     \
                    __LINE__, #call, ember_status_name(st_),                       \
                    ember_status_name(status), ember_last_error());                \
            failures++;                                                            \
        }                                                                          \
    } while (0)

static int write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    if (fwrite(data, 1, len, f) != len) { fclose(f); return 0; }
    return fclose(f) == 0;
}

static void *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 64);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static int stop_after_first(void *user_data, ember_token token, const char *text, size_t len) {
    int *calls = user_data;
    (void)token; (void)text; (void)len;
    ++*calls;
    return 1; /* stop */
}

static int cancel_from_callback(void *user_data, ember_token token, const char *text, size_t len) {
    (void)token; (void)text; (void)len;
    ember_session_cancel((ember_session *)user_data);
    return 0;
}

/* Calls on the generating session from its own callback: EMBER_ERR_STATE, not
 * a deadlock; free is ignored; cancel works. */
static int reenter_from_callback(void *user_data, ember_token token, const char *text, size_t len) {
    ember_session *s = user_data;
    ember_token t = token == EMBER_TOKEN_NONE ? 1 : token;
    (void)text; (void)len;
    EXPECT(ember_session_eval(s, &t, 1), EMBER_ERR_STATE);
    EXPECT(ember_generate(s, &t, 1, NULL, NULL, NULL, NULL, NULL), EMBER_ERR_STATE);
    EXPECT(ember_session_reset(s), EMBER_ERR_STATE);
    ember_session_free(s);
    CHECK(strstr(ember_last_error(), "ignored") != NULL);
    EXPECT(ember_session_cancel(s), EMBER_OK);
    return 0;
}

int main(int argc, char **argv) {
    ember_model *model = NULL, *m2 = NULL;
    ember_session *session = NULL, *s2 = NULL;
    ember_sampler *sampler = NULL;
    ember_token toks[64], tok = 0;
    size_t n = 0, len = 0, arena_bytes = 0, heap = 0, file_len = 0;
    char buf[256], path[1024];
    const float *logits = NULL;
    const ember_token *ctx_tokens = NULL;
    void *file = NULL, *state = NULL;
    unsigned char junk[4096];
    int is_eog = -1, calls = 0;
    ember_session_config scfg;
    ember_sampler_config samp;
    ember_generate_options opts;
    ember_generate_result res;
    ember_model_info info;
    ember_chat_message msg = {"user", "hi"};

    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.ember SCRATCH_DIR\n", argv[0]);
        return 2;
    }

    /* Library. */
    CHECK(strcmp(ember_version(), EMBER_VERSION) == 0);
    CHECK(ember_abi_version() == EMBER_ABI_VERSION);
    CHECK(strcmp(ember_status_name(EMBER_OK), "EMBER_OK") == 0);
    CHECK(strcmp(ember_status_name((ember_status)12345), "unknown status") == 0);

    /* Free(NULL), twice, for every handle type. */
    ember_model_free(NULL); ember_model_free(NULL);
    ember_session_free(NULL); ember_session_free(NULL);
    ember_sampler_free(NULL); ember_sampler_free(NULL);

    /* Loading: NULL, unknown path, corrupt files, empty buffer. */
    EXPECT(ember_model_load(NULL, &model), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_model_load(argv[1], NULL), EMBER_ERR_INVALID_ARGUMENT);
    model = (ember_model *)1; /* a failed load sets *out to NULL */
    EXPECT(ember_model_load("/nonexistent/model.ember", &model), EMBER_ERR_IO);
    CHECK(model == NULL);
    memset(junk, 0xAB, sizeof junk);
    snprintf(path, sizeof path, "%s/corrupt.ember", argv[2]);
    CHECK(write_file(path, junk, sizeof junk));
    EXPECT(ember_model_load(path, &model), EMBER_ERR_FORMAT);
    snprintf(path, sizeof path, "%s/empty.ember", argv[2]);
    CHECK(write_file(path, junk, 0));
    EXPECT(ember_model_load(path, &model), EMBER_ERR_FORMAT);
    EXPECT(ember_model_from_buffer(junk, 0, 0, &model), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_model_from_buffer(NULL, 100, 0, &model), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_model_from_buffer(junk, sizeof junk, 0, &model), EMBER_ERR_FORMAT);
    EXPECT(ember_model_from_buffer(junk, sizeof junk, 0x80, &model), EMBER_ERR_INVALID_ARGUMENT);
    /* A truncated copy of the real model, through a buffer. */
    file = read_file(argv[1], &file_len);
    CHECK(file != NULL);
    if (file) {
        EXPECT(ember_model_from_buffer(file, file_len / 2, EMBER_BUFFER_COPY, &m2), EMBER_ERR_FORMAT);
        /* Unaligned start: copied, works. */
        memmove((char *)file + 1, file, file_len);
        EXPECT(ember_model_from_buffer((char *)file + 1, file_len, 0, &m2), EMBER_OK);
        info.struct_size = sizeof info;
        EXPECT(ember_model_info_get(m2, &info), EMBER_OK);
        CHECK(info.storage == EMBER_STORAGE_COPY);
        ember_model_free(m2);
        m2 = NULL;
    }

    EXPECT(ember_model_load(argv[1], &model), EMBER_OK);
    if (!model) return 1;

    /* Info: NULL, bad struct size. */
    EXPECT(ember_model_info_get(NULL, &info), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_model_info_get(model, NULL), EMBER_ERR_INVALID_ARGUMENT);
    info.struct_size = 3;
    EXPECT(ember_model_info_get(model, &info), EMBER_ERR_INVALID_ARGUMENT);
    info.struct_size = sizeof info;
    EXPECT(ember_model_info_get(model, &info), EMBER_OK);
    CHECK(info.storage == EMBER_STORAGE_MAPPED && info.vocab_size > 0);

    /* Tokenizer. */
    EXPECT(ember_tokenize(NULL, "hi", 0, toks, 64, &n), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_tokenize(model, NULL, 0, toks, 64, &n), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_tokenize(model, "hi", 0, toks, 64, NULL), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_tokenize(model, "hi", 0x100, toks, 64, &n), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_tokenize(model, "\xff\xfe", 0, toks, 64, &n), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_tokenize(model, "Once upon a time", 0, NULL, 0, &n), EMBER_ERR_BUFFER_TOO_SMALL);
    CHECK(n > 1);
    EXPECT(ember_tokenize(model, "Once upon a time", 0, toks, 1, &n), EMBER_ERR_BUFFER_TOO_SMALL);
    EXPECT(ember_tokenize(model, "Once upon a time", 0, NULL, 64, &n), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_tokenize(model, "Once upon a time", 0, toks, 64, &n), EMBER_OK);
    EXPECT(ember_tokenize(model, "", EMBER_TOKENIZE_NO_BOS, NULL, 0, &len), EMBER_OK);
    CHECK(len == 0);
    EXPECT(ember_detokenize(model, toks, n, NULL, 0, &len), EMBER_ERR_BUFFER_TOO_SMALL);
    CHECK(len == strlen("Once upon a time"));
    EXPECT(ember_detokenize(model, toks, n, buf, len, &len), EMBER_ERR_BUFFER_TOO_SMALL); /* no room for NUL */
    EXPECT(ember_detokenize(model, toks, n, buf, sizeof buf, &len), EMBER_OK);
    CHECK(strcmp(buf, "Once upon a time") == 0);
    EXPECT(ember_detokenize(model, NULL, 3, buf, sizeof buf, &len), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_detokenize(model, NULL, 0, buf, sizeof buf, &len), EMBER_OK);
    CHECK(len == 0 && buf[0] == '\0');
    tok = 999999;
    EXPECT(ember_detokenize(model, &tok, 1, buf, sizeof buf, &len), EMBER_ERR_TOKEN_OUT_OF_RANGE);
    EXPECT(ember_token_text(model, 999999, buf, sizeof buf, &len), EMBER_ERR_TOKEN_OUT_OF_RANGE);
    EXPECT(ember_token_text(model, toks[1], buf, sizeof buf, NULL), EMBER_OK);
    EXPECT(ember_model_special_token(model, EMBER_SPECIAL_BOS, NULL), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_model_special_token(model, (ember_special)42, &tok), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_model_special_token(model, EMBER_SPECIAL_EOS, &tok), EMBER_OK);
    EXPECT(ember_token_is_end_of_generation(model, tok, &is_eog), EMBER_OK);
    CHECK(tok == EMBER_TOKEN_NONE || is_eog == 1);
    EXPECT(ember_token_is_end_of_generation(model, 999999, &is_eog), EMBER_ERR_TOKEN_OUT_OF_RANGE);

    /* Chat. */
    CHECK(ember_chat_builtin_template(NULL) == NULL);
    CHECK(ember_chat_builtin_template("no-such-template") == NULL);
    CHECK(ember_chat_builtin_template("chatml") != NULL);
    EXPECT(ember_chat_render(model, NULL, &msg, 1, 1, buf, sizeof buf, &len), EMBER_ERR_TEMPLATE);
    EXPECT(ember_chat_render(model, "{% if %}", &msg, 1, 1, buf, sizeof buf, &len), EMBER_ERR_TEMPLATE);
    EXPECT(ember_chat_render(model, ember_chat_builtin_template("chatml"), NULL, 1, 1, buf,
                             sizeof buf, &len), EMBER_ERR_INVALID_ARGUMENT);
    msg.content = NULL;
    EXPECT(ember_chat_render(model, ember_chat_builtin_template("chatml"), &msg, 1, 1, buf,
                             sizeof buf, &len), EMBER_ERR_INVALID_ARGUMENT);
    msg.content = "hi";
    EXPECT(ember_chat_render(model, ember_chat_builtin_template("chatml"), &msg, 1, 1, buf, 4,
                             &len), EMBER_ERR_BUFFER_TOO_SMALL);
    EXPECT(ember_chat_render(model, ember_chat_builtin_template("chatml"), &msg, 1, 1, buf,
                             sizeof buf, &len), EMBER_OK);
    CHECK(strcmp(buf, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n") == 0);

    /* Session configs and memory. */
    EXPECT(ember_session_config_default(NULL, sizeof scfg), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_session_config_default(&scfg, 0), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_session_config_default(&scfg, sizeof scfg + 8), EMBER_ERR_UNSUPPORTED);
    EXPECT(ember_session_config_default(&scfg, sizeof scfg), EMBER_OK);
    scfg.context = 64;
    EXPECT(ember_session_memory_required(NULL, &scfg, &heap, NULL, NULL), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_session_memory_required(model, &scfg, &heap, &arena_bytes, NULL), EMBER_OK);
    CHECK(heap > 0 && arena_bytes > 0);
    scfg.context = info.max_context + 1;
    EXPECT(ember_session_new(model, &scfg, &session), EMBER_ERR_INVALID_ARGUMENT);
    scfg.context = 64;
    scfg.kv_type = 77;
    EXPECT(ember_session_new(model, &scfg, &session), EMBER_ERR_INVALID_ARGUMENT);
    scfg.kv_type = EMBER_KV_F16;
    scfg.threads = 1000000; /* over the limit (0 is valid: one per physical core) */
    EXPECT(ember_session_new(model, &scfg, &session), EMBER_ERR_INVALID_ARGUMENT);
    scfg.threads = 1;
    scfg.struct_size = 4;
    EXPECT(ember_session_new(model, &scfg, &session), EMBER_ERR_INVALID_ARGUMENT);
    scfg.struct_size = sizeof scfg;
    EXPECT(ember_session_new(NULL, &scfg, &session), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_session_new(model, &scfg, NULL), EMBER_ERR_INVALID_ARGUMENT);
    /* Arena: NULL, too small, zero. */
    EXPECT(ember_session_new_in(model, &scfg, NULL, arena_bytes, &s2), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_session_new_in(model, &scfg, junk, 16, &s2), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_session_new_in(model, &scfg, junk, 0, &s2), EMBER_ERR_INVALID_ARGUMENT);
    CHECK(s2 == NULL);

    EXPECT(ember_session_new(model, &scfg, &session), EMBER_OK);
    if (!session) return 1;
    /* The model handle may go first: the session keeps the model alive. */
    ember_model_free(model);
    model = NULL;
    EXPECT(ember_model_load(argv[1], &model), EMBER_OK);

    /* Session calls. */
    EXPECT(ember_session_logits(session, &logits, &n), EMBER_ERR_STATE);
    EXPECT(ember_session_eval(NULL, toks, 1), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_session_eval(session, toks, 0), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_session_eval(session, NULL, 2), EMBER_ERR_INVALID_ARGUMENT);
    tok = 999999;
    EXPECT(ember_session_eval(session, &tok, 1), EMBER_ERR_TOKEN_OUT_OF_RANGE);
    EXPECT(ember_session_reset(session), EMBER_OK);
    {
        ember_token many[65];
        size_t i;
        for (i = 0; i < 65; i++) many[i] = toks[i % 2];
        EXPECT(ember_session_eval(session, many, 65), EMBER_ERR_CONTEXT_FULL);
    }
    EXPECT(ember_tokenize(model, "Once upon a time", 0, toks, 64, &n), EMBER_OK);
    EXPECT(ember_session_eval(session, toks, n), EMBER_OK);
    EXPECT(ember_session_logits(session, NULL, &len), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_session_logits(session, &logits, &len), EMBER_OK);
    CHECK(len == info.vocab_size);
    EXPECT(ember_session_tokens(session, &ctx_tokens, &len), EMBER_OK);
    CHECK(len == n);
    EXPECT(ember_session_truncate(session, n + 1), EMBER_ERR_INVALID_ARGUMENT);

    /* Sampler. */
    EXPECT(ember_sampler_config_default(&samp, 8), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_sampler_config_default(&samp, sizeof samp), EMBER_OK);
    samp.temperature = -1.0f;
    EXPECT(ember_sampler_new(model, &samp, &sampler), EMBER_ERR_INVALID_ARGUMENT);
    samp.temperature = 0.0f;
    samp.n_logit_bias = 3; /* logit_bias NULL */
    EXPECT(ember_sampler_new(model, &samp, &sampler), EMBER_ERR_INVALID_ARGUMENT);
    samp.n_logit_bias = 0;
    EXPECT(ember_sampler_new(model, &samp, &sampler), EMBER_OK);
    EXPECT(ember_session_logits(session, &logits, &len), EMBER_OK);
    EXPECT(ember_sampler_sample(sampler, logits, len - 1, &tok), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_sampler_sample(sampler, NULL, len, &tok), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_sampler_sample(sampler, logits, len, &tok), EMBER_OK);
    EXPECT(ember_sampler_accept(sampler, 999999), EMBER_ERR_TOKEN_OUT_OF_RANGE);
    EXPECT(ember_sampler_accept(sampler, tok), EMBER_OK);
    EXPECT(ember_sampler_reset(NULL), EMBER_ERR_INVALID_ARGUMENT);
    ember_sampler_free(sampler);
    sampler = NULL;

    /* State: file and memory round trips, bad inputs. */
    snprintf(path, sizeof path, "%s/state.bin", argv[2]);
    EXPECT(ember_session_save(session, NULL), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_session_save(session, "/nonexistent/dir/state.bin"), EMBER_ERR_IO);
    EXPECT(ember_session_save(session, path), EMBER_OK);
    EXPECT(ember_session_load(session, "/nonexistent/state.bin"), EMBER_ERR_IO);
    snprintf(buf, sizeof buf, "%s/corrupt.ember", argv[2]);
    EXPECT(ember_session_load(session, buf), EMBER_ERR_FORMAT);
    EXPECT(ember_session_load(session, path), EMBER_OK);
    EXPECT(ember_session_tokens(session, &ctx_tokens, &len), EMBER_OK);
    CHECK(len == n);
    EXPECT(ember_session_state_write(session, NULL, 0, &len), EMBER_ERR_BUFFER_TOO_SMALL);
    state = malloc(len);
    EXPECT(ember_session_state_write(session, state, len, &len), EMBER_OK);
    EXPECT(ember_session_state_read(session, state, 0), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_session_state_read(session, state, len / 2), EMBER_ERR_FORMAT);
    EXPECT(ember_session_state_read(session, state, len), EMBER_OK);
    ((unsigned char *)state)[len - 5] ^= 1;
    EXPECT(ember_session_state_read(session, state, len), EMBER_ERR_FORMAT);
    free(state);
    EXPECT(ember_session_load(session, path), EMBER_OK);

    /* Generation: bad options, callback stop, cancellation. */
    EXPECT(ember_generate(NULL, toks, n, NULL, NULL, NULL, NULL, NULL), EMBER_ERR_INVALID_ARGUMENT);
    EXPECT(ember_generate_options_default(&opts, sizeof opts), EMBER_OK);
    opts.n_stop = 1; /* stop NULL */
    EXPECT(ember_generate(session, NULL, 0, NULL, &opts, NULL, NULL, NULL), EMBER_ERR_INVALID_ARGUMENT);
    opts.n_stop = 0;
    opts.max_tokens = 5;
    res.struct_size = 1;
    EXPECT(ember_generate(session, NULL, 0, NULL, &opts, NULL, NULL, &res), EMBER_ERR_INVALID_ARGUMENT);
    res.struct_size = sizeof res;
    EXPECT(ember_session_reset(session), EMBER_OK);
    EXPECT(ember_generate(session, NULL, 0, NULL, &opts, NULL, NULL, &res), EMBER_ERR_STATE);
    EXPECT(ember_generate(session, toks, n, NULL, &opts, stop_after_first, &calls, &res), EMBER_OK);
    CHECK(calls == 1 && res.stop_reason == EMBER_STOP_CALLBACK && res.generated_tokens == 1);
    EXPECT(ember_generate(session, NULL, 0, NULL, &opts, cancel_from_callback, session, &res), EMBER_OK);
    CHECK(res.stop_reason == EMBER_STOP_CANCELLED && res.generated_tokens == 1);
    EXPECT(ember_generate(session, NULL, 0, NULL, &opts, reenter_from_callback, session, &res),
           EMBER_OK);
    CHECK(res.stop_reason == EMBER_STOP_CANCELLED && res.generated_tokens == 1);
    /* A cancel with no generation running is forgotten by the next one. */
    EXPECT(ember_session_cancel(session), EMBER_OK);
    EXPECT(ember_generate(session, NULL, 0, NULL, &opts, NULL, NULL, &res), EMBER_OK);
    CHECK(res.stop_reason == EMBER_STOP_MAX_TOKENS && res.generated_tokens == 5);
    EXPECT(ember_session_cancel(NULL), EMBER_ERR_INVALID_ARGUMENT);
    /* Prompt longer than the context. */
    EXPECT(ember_session_reset(session), EMBER_OK);
    {
        ember_token many[65];
        size_t i;
        for (i = 0; i < 65; i++) many[i] = toks[i % 2];
        EXPECT(ember_generate(session, many, 65, NULL, &opts, NULL, NULL, &res), EMBER_ERR_CONTEXT_FULL);
    }

    ember_session_free(session);
    ember_session_free(NULL);
    ember_model_free(model);
    ember_model_free(NULL);
    free(file);
    if (failures) {
        fprintf(stderr, "misuse: %d check(s) failed\n", failures);
        return 1;
    }
    printf("misuse: all checks passed\n");
    return 0;
}
