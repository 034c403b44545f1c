/*
 * ratelimitd: command line, signals, start-up and reload.
 *
 * Signals are blocked in every thread and taken synchronously by the main thread with
 * sigwait(), so handling SIGHUP may do real work (read and validate a file) without
 * async-signal-safety tricks, and loop threads are never interrupted.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include "ratelimitd/config.h"
#include "ratelimitd/error.h"
#include "ratelimitd/limits.h"
#include "ratelimitd/log.h"
#include "ratelimitd/server.h"

#define RL_EXIT_USAGE 2

typedef struct st_rl_options_t {
    const char *config_path;
    int check_only;
    int version;
    int help;
} rl_options_t;

static void print_usage(FILE *out)
{
    fprintf(out, "Usage: ratelimitd [--config FILE] [--check-config] [--version] [--help]\n"
                 "\n"
                 "  -c, --config FILE   configuration file (default: " RL_CONFIG_DEFAULT_PATH ")\n"
                 "      --check-config  validate the configuration, print ok or every error, and exit\n"
                 "  -v, --version       print the version and exit\n"
                 "  -h, --help          print this help and exit\n"
                 "\n"
                 "Signals: SIGTERM/SIGINT drain and exit 0; SIGHUP reloads limits from the same file.\n");
}

/* Returns -1 to go on, or an exit code. Every argument is checked before --version or --help
 * acts, so a script's typo is an error whichever flag comes first. */
static int parse_options(int argc, char **argv, rl_options_t *options)
{
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"check-config", no_argument, NULL, 'C'},
                                             {"version", no_argument, NULL, 'v'},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    *options = (rl_options_t){.config_path = RL_CONFIG_DEFAULT_PATH};
    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, ":c:vh", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            options->config_path = optarg;
            break;
        case 'C':
            options->check_only = 1;
            break;
        case 'v':
            options->version = 1;
            break;
        case 'h':
            options->help = 1;
            break;
        default: {
            /* getopt names a bad short option only in optopt: argv[optind - 1] may be a whole
             * group such as -vZ, or the argument before it. */
            const char *arg = argv[optind - 1];
            int is_long = strncmp(arg, "--", 2) == 0;
            const char *what = opt == ':' ? "missing argument for" : "unknown";
            if (is_long || optopt == 0)
                fprintf(stderr, "ratelimitd: %s option: %s\n", what, arg);
            else
                fprintf(stderr, "ratelimitd: %s option: -%c\n", what, optopt);
            print_usage(stderr);
            return RL_EXIT_USAGE;
        }
        }
    }
    if (optind < argc) {
        fprintf(stderr, "ratelimitd: unexpected argument: %s\n", argv[optind]);
        print_usage(stderr);
        return RL_EXIT_USAGE;
    }
    if (options->help) {
        print_usage(stdout);
        return 0;
    }
    if (options->version) {
        printf("ratelimitd %s\n", RL_VERSION);
        return 0;
    }
    return -1;
}

/*
 * With memcached, whoever can list its keys can test guessed API keys against them unless the
 * secret is too long to guess; a placeholder such as the example file's "change-me" is as good as
 * none. 16 bytes is what the Terraform module requires.
 */
static void warn_if_secret_is_weak(const rl_config_t *config)
{
    size_t len = strlen(config->backend.key_hash_secret);
    if (config->backend.type != RL_BACKEND_MEMCACHED || len >= 16)
        return;
    if (len == 0)
        rl_log_warn("main", "backend.key_hash_secret is empty: whoever can list memcached's keys can test guessed API "
                            "keys against them; set one long random secret (openssl rand -hex 32) on every instance");
    else
        rl_log_warn("main",
                    "backend.key_hash_secret has only %zu bytes: a guessable secret lets whoever can list memcached's "
                    "keys test guessed API keys against them; set one long random secret (openssl rand -hex 32) on "
                    "every instance",
                    len);
}

static rl_config_t *load_config(const char *path, FILE *errors_out)
{
    char *errors = NULL;
    rl_config_t *config = rl_config_load(path, &errors);
    if (config == NULL && errors != NULL)
        fputs(errors, errors_out);
    free(errors);
    return config;
}

static int check_config(const char *path)
{
    rl_config_t *config = load_config(path, stdout);
    if (config == NULL)
        return RL_EXIT_USAGE;
    printf("ok\n");
    rl_config_destroy(config);
    return 0;
}

/* Logs every line of `text` as its own event, so multi-line error lists keep the one-line format. */
static void log_each_line(rl_log_level_t level, const char *what, const char *text)
{
    if (text == NULL || *text == '\0') {
        rl_log(level, "main", "%s", what);
        return;
    }
    while (*text != '\0') {
        const char *end = strchr(text, '\n');
        int len = end != NULL ? (int)(end - text) : (int)strlen(text);
        rl_log(level, "main", "%s: %.*s", what, len, text);
        text += len + (end != NULL);
    }
}

/* Lets max_connections be reached before the process runs out of descriptors. */
static void raise_fd_limit(void)
{
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == limit.rlim_max)
        return;
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0)
        rl_log_warn("main", "cannot raise the open-file limit: %s", strerror(errno));
}

/* Names the sections a reload cannot apply, so a changed listener or backend is not mistaken
 * for one in force. */
static void warn_restart_sections(const rl_config_t *running, const rl_config_t *loaded)
{
    const char *names[8];
    size_t n = rl_config_restart_sections(running, loaded, names, sizeof(names) / sizeof(names[0]));
    char list[128] = "";
    size_t used = 0;
    for (size_t i = 0; i < n && used < sizeof(list); ++i) {
        int w = snprintf(list + used, sizeof(list) - used, "%s%s", i == 0 ? "" : ", ", names[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    if (n != 0)
        rl_log_warn("main", "reload: %s changed in %s but a reload applies only limits; restart to apply them", list,
                    running->path);
}

/* SIGHUP: only the limits change on a live server; a bad file leaves the old ones in force. */
static void reload(rl_server_t *server, const rl_config_t *running, const char *path)
{
    char *errors = NULL;
    rl_config_t *config = rl_config_load(path, &errors);
    if (config == NULL) {
        log_each_line(RL_LOG_ERROR, "reload rejected, old limits stay in force", errors);
        free(errors);
        rl_metrics_count_reload(rl_server_metrics(server), false);
        return;
    }
    rl_limits_t *limits = rl_limits_create(config);
    if (limits == NULL) {
        rl_log_error("main", "reload rejected: out of memory");
        rl_metrics_count_reload(rl_server_metrics(server), false);
    } else {
        warn_restart_sections(running, config);
        rl_server_reload(server, limits);
        rl_limits_release(limits);
        rl_metrics_count_reload(rl_server_metrics(server), true);
        rl_log_info("main", "reloaded limits from %s (%zu tiers, %zu keys, default %u)", path, config->limits.num_tiers,
                    config->limits.num_keys, config->limits.default_limit);
    }
    rl_config_destroy(config);
}

/* Blocks until SIGTERM or SIGINT, reloading on SIGHUP; returns the signal. */
static int wait_for_stop(rl_server_t *server, const rl_config_t *running, const char *path, const sigset_t *signals)
{
    for (;;) {
        int sig;
        if (sigwait(signals, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            reload(server, running, path);
            continue;
        }
        return sig;
    }
}

/* `signals` (SIGTERM, SIGINT, SIGHUP) are already blocked; main() blocks them first thing. */
static int run(const rl_options_t *options, const sigset_t *signals)
{
    int exit_code = 1;
    rl_server_t *server = NULL;
    rl_limits_t *limits = NULL;
    rl_config_t *config = load_config(options->config_path, stderr);
    if (config == NULL)
        return RL_EXIT_USAGE;
    rl_log_level_t level;
    if (rl_log_parse_level(config->log_level, &level) == RL_OK)
        rl_log_set_level(level);
    /* before any thread starts; a pipe it cannot reopen non-blocking is logged, and not fatal */
    (void)rl_log_open(STDERR_FILENO);

    /* A shell starting us in the background may have set SIGINT to ignored, which would discard
     * it before sigwait(). Safe now that the signals are blocked: a pending one stays pending
     * for wait_for_stop() instead of taking the default action. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGPIPE, SIG_IGN);

    raise_fd_limit();
    warn_if_secret_is_weak(config);
    char err[512] = "";
    if ((limits = rl_limits_create(config)) == NULL) {
        rl_log_error("main", "out of memory");
        goto exit;
    }
    if ((server = rl_server_create(config, limits, err, sizeof(err))) == NULL) {
        rl_log_error("main", "cannot start: %s", err);
        goto exit;
    }
    if (rl_server_start(server) != RL_OK) {
        rl_log_error("main", "cannot start the loop threads");
        goto exit;
    }
    rl_log_info("main", "ratelimitd %s started: %zu listener(s), %zu loop thread(s), backend %s", RL_VERSION,
                config->num_listen, rl_server_num_threads(server),
                config->backend.type == RL_BACKEND_MEMCACHED ? "memcached" : "local");
    int sig = wait_for_stop(server, config, options->config_path, signals);
    /* Draining starts before the line that says so: that line may wait for a slow log reader. */
    rl_server_shutdown(server);
    rl_log_info("main", "%s received: draining", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    size_t left_open = rl_server_join(server);
    if (left_open != 0) {
        /* Forced stop after the grace period: the connections' memory belongs to h2o, which has
         * no call to abort them, so leave it to the kernel rather than free around it. */
        rl_log_warn("main", "stopped with %zu connections still open after the grace period", left_open);
        _exit(0);
    }
    rl_log_info("main", "stopped");
    exit_code = 0;
exit:
    rl_server_destroy(server);
    rl_limits_release(limits);
    rl_config_destroy(config);
    return exit_code;
}

/* Until SIGTERM, SIGINT and SIGHUP are blocked they take their default action and kill the
 * process, and a sidecar or orchestrator may send one the moment the container starts. Blocked,
 * they stay pending for sigwait() in wait_for_stop(), and the loop threads, created later,
 * inherit the mask. --check-config, --version and --help run blocked too; they exit at once. */
static void block_stop_signals(sigset_t *signals)
{
    sigemptyset(signals);
    sigaddset(signals, SIGTERM);
    sigaddset(signals, SIGINT);
    sigaddset(signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, signals, NULL);
}

int main(int argc, char **argv)
{
    /* Before anything else, reading the config included, so no start-up step is left exposed. */
    sigset_t signals;
    block_stop_signals(&signals);

    rl_options_t options;
    int code = parse_options(argc, argv, &options);
    if (code >= 0)
        return code;
    if (options.check_only)
        return check_config(options.config_path);
    return run(&options, &signals);
}
