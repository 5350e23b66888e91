/*
 * generate.c - prompt in, text out (greedy by default), tokens/s on stderr.
 *
 *   generate -m MODEL.ember [-p PROMPT] [-n MAX_TOKENS] [--temp T --seed S]
 *            [--buffer] [--arena]
 *
 * Prints the same text as `ember run -m MODEL -p PROMPT -n N`. --buffer reads
 * the file into a 64-byte aligned buffer and loads it in place
 * (ember_model_from_buffer); --arena puts the session in a caller arena.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200112L
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember.h"

static int fail(const char *what, ember_status st) {
    fprintf(stderr, "generate: %s: %s (%s)\n", what, ember_last_error(), ember_status_name(st));
    return 1;
}

/* Streams each piece of text to stdout. */
static int on_token(void *user_data, ember_token token, const char *text, size_t len) {
    (void)user_data;
    (void)token;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0; /* go on */
}

/* Reads a whole file into a 64-byte aligned buffer (for in-place loading). */
static void *read_aligned(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    void *buf = NULL;
    long size;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) <= 0 || fseek(f, 0, SEEK_SET) != 0 ||
        posix_memalign(&buf, 64, (size_t)size) != 0) {
        fclose(f);
        return NULL;
    }
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = (size_t)size;
    return buf;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *prompt = "";
    unsigned max_tokens = 256;
    int use_buffer = 0, use_arena = 0, i, rc = 1;
    float temperature = 0.0f;
    unsigned long long seed = 0;
    void *file_buf = NULL, *arena = NULL;
    size_t file_len = 0, n_prompt = 0, arena_bytes = 0;
    ember_model *model = NULL;
    ember_session *session = NULL;
    ember_token *tokens = NULL;
    ember_model_info info;
    ember_session_config scfg;
    ember_sampler_config sampler;
    ember_generate_options opts;
    ember_generate_result res;
    ember_status st;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) model_path = argv[++i];
        else if (!strcmp(argv[i], "-p") && i + 1 < argc) prompt = argv[++i];
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) max_tokens = (unsigned)atoi(argv[++i]);
        else if (!strcmp(argv[i], "--temp") && i + 1 < argc) temperature = (float)atof(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--buffer")) use_buffer = 1;
        else if (!strcmp(argv[i], "--arena")) use_arena = 1;
        else {
            fprintf(stderr, "usage: %s -m MODEL [-p PROMPT] [-n N] [--temp T] [--seed S] "
                            "[--buffer] [--arena]\n", argv[0]);
            return 2;
        }
    }
    if (!model_path) {
        fprintf(stderr, "generate: -m MODEL is required\n");
        return 2;
    }
    if (ember_abi_version() != EMBER_ABI_VERSION) {
        fprintf(stderr, "generate: libember ABI %u, header %d\n", ember_abi_version(),
                EMBER_ABI_VERSION);
        return 1;
    }

    if (use_buffer) {
        file_buf = read_aligned(model_path, &file_len);
        if (!file_buf) {
            fprintf(stderr, "generate: cannot read %s\n", model_path);
            return 1;
        }
        st = ember_model_from_buffer(file_buf, file_len, 0, &model);
    } else {
        st = ember_model_load(model_path, &model);
    }
    if (st != EMBER_OK) { rc = fail("loading the model", st); goto out; }
    info.struct_size = sizeof info;
    if ((st = ember_model_info_get(model, &info)) != EMBER_OK) { rc = fail("model info", st); goto out; }

    /* Tokenize: ask for the size, then fill. An empty prompt starts from BOS. */
    st = ember_tokenize(model, prompt, 0, NULL, 0, &n_prompt);
    if (st != EMBER_OK && st != EMBER_ERR_BUFFER_TOO_SMALL) { rc = fail("tokenize", st); goto out; }
    tokens = malloc((n_prompt + 1) * sizeof *tokens);
    if (!tokens) goto out;
    if ((st = ember_tokenize(model, prompt, 0, tokens, n_prompt, &n_prompt)) != EMBER_OK) {
        rc = fail("tokenize", st);
        goto out;
    }
    if (n_prompt == 0) {
        if ((st = ember_model_special_token(model, EMBER_SPECIAL_BOS, &tokens[0])) != EMBER_OK) {
            rc = fail("bos", st);
            goto out;
        }
        if (tokens[0] == EMBER_TOKEN_NONE) {
            fprintf(stderr, "generate: empty prompt and the model has no BOS token\n");
            goto out;
        }
        n_prompt = 1;
    }

    /* Context: prompt + max tokens, capped at the model's maximum (as `ember run`). */
    ember_session_config_default(&scfg, sizeof scfg);
    scfg.context = (uint32_t)(n_prompt + max_tokens);
    if (scfg.context > info.max_context) scfg.context = info.max_context;
    if (use_arena) {
        st = ember_session_memory_required(model, &scfg, NULL, &arena_bytes, NULL);
        if (st != EMBER_OK) { rc = fail("memory_required", st); goto out; }
        arena = malloc(arena_bytes);
        if (!arena) goto out;
        st = ember_session_new_in(model, &scfg, arena, arena_bytes, &session);
    } else {
        st = ember_session_new(model, &scfg, &session);
    }
    if (st != EMBER_OK) { rc = fail("creating the session", st); goto out; }

    ember_sampler_config_default(&sampler, sizeof sampler);
    sampler.temperature = temperature;
    sampler.seed = seed;
    ember_generate_options_default(&opts, sizeof opts);
    opts.max_tokens = max_tokens;
    res.struct_size = sizeof res;
    st = ember_generate(session, tokens, n_prompt, &sampler, &opts, on_token, NULL, &res);
    if (st != EMBER_OK) { rc = fail("generate", st); goto out; }
    printf("\n");
    fprintf(stderr, "[%u prompt tokens, %u generated; prefill %.1f tok/s, decode %.1f tok/s]\n",
            res.prompt_tokens, res.generated_tokens,
            res.prefill_seconds > 0 ? res.prompt_tokens / res.prefill_seconds : 0.0,
            res.decode_seconds > 0 ? res.generated_tokens / res.decode_seconds : 0.0);
    rc = 0;
out:
    ember_session_free(session);
    ember_model_free(model); /* before the buffer: the model uses it in place */
    free(arena);
    free(file_buf);
    free(tokens);
    return rc;
}
