/*
 * host_costs: what a kernel crossing costs on this machine, for bench/run's syscall accounting
 * (BENCH_PROFILE=syscalls).
 *
 * A server's CPU per request is mostly system calls and switches between processes, and what those
 * cost varies by 10x between hosts (a paravirtualised guest traps every system call to its
 * hypervisor). Counts per request alone cannot say how much of a server's CPU they are; counts
 * times these unit costs can. Run it pinned to the core the servers share (bench/run does), so
 * that the two processes of the switch test take turns on one core as ratelimitd and its
 * memcached nodes do.
 *
 * Prints three lines of "name value" (microseconds):
 *   syscall_us        a system call that does nothing (getppid)
 *   pipe_rw_us        a 1-byte pipe write and read in one process: the I/O calls of a switch, alone
 *   switch_us         one switch between two processes on one core: a ping-pong round trip over
 *                     two pipes, minus its two write+read pairs, halved
 * Usage: host_costs [iterations]   (default 200000; the switch test runs a tenth of them)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* 0, or -1 with errno set (EIO for a short transfer or end of file, which set none). */
static int transfer_byte(int fd, int writing)
{
    char c = 'x';
    ssize_t n = writing ? write(fd, &c, 1) : read(fd, &c, 1);

    if (n == 1)
        return 0;
    if (n >= 0)
        errno = EIO;
    return -1;
}

static double null_syscall_us(long n)
{
    double t0 = now_us();

    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    return (now_us() - t0) / n;
}

static int pipe_rw_us(long n, double *out)
{
    int fds[2], err = 0;
    double t0;

    if (pipe(fds) != 0)
        return -1;
    t0 = now_us();
    for (long i = 0; i < n && err == 0; i++)
        if (transfer_byte(fds[1], 1) != 0 || transfer_byte(fds[0], 0) != 0)
            err = errno;
    *out = (now_us() - t0) / n;
    close(fds[0]);
    close(fds[1]);
    errno = err;
    return err == 0 ? 0 : -1;
}

static void close_pair(int fds[2])
{
    close(fds[0]);
    close(fds[1]);
}

/* The child echoes every byte back; both block in read, so each hop is a switch. Each side closes
 * the ends it does not use, so that either one's failure is the other's end of file, not a hang. */
static int ping_pong_us(long n, double *out)
{
    int to_child[2], to_parent[2], status, err = 0;
    pid_t pid;
    double t0;

    if (pipe(to_child) != 0)
        return -1;
    if (pipe(to_parent) != 0) {
        err = errno;
        close_pair(to_child);
        errno = err;
        return -1;
    }
    if ((pid = fork()) < 0) {
        err = errno;
        close_pair(to_child);
        close_pair(to_parent);
        errno = err;
        return -1;
    }
    if (pid == 0) {
        close(to_child[1]);
        close(to_parent[0]);
        for (long i = 0; i < n; i++)
            if (transfer_byte(to_child[0], 0) != 0 || transfer_byte(to_parent[1], 1) != 0)
                _exit(1);
        _exit(0);
    }
    close(to_child[0]);
    close(to_parent[1]);
    t0 = now_us();
    for (long i = 0; i < n && err == 0; i++)
        if (transfer_byte(to_child[1], 1) != 0 || transfer_byte(to_parent[0], 0) != 0)
            err = errno;
    *out = (now_us() - t0) / n;
    close(to_child[1]);
    close(to_parent[0]);
    if (waitpid(pid, &status, 0) != pid)
        err = err != 0 ? err : errno;
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        err = err != 0 ? err : ECHILD; /* the child's own error is its; say only that it failed */
    errno = err;
    return err == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    long n = 200000;
    char *end = NULL;
    double rw, rtt;

    if (argc > 1) {
        errno = 0;
        n = strtol(argv[1], &end, 10);
        if (errno != 0 || *end != '\0' || n < 10) {
            fprintf(stderr, "host_costs: iterations must be a number of at least 10, not \"%s\"\n", argv[1]);
            return 2;
        }
    }
    printf("syscall_us %.3f\n", null_syscall_us(n));
    if (pipe_rw_us(n, &rw) != 0) {
        fprintf(stderr, "host_costs: pipe write and read in one process failed: %s\n", strerror(errno));
        return 1;
    }
    printf("pipe_rw_us %.3f\n", rw);
    if (ping_pong_us(n / 10, &rtt) != 0) {
        fprintf(stderr, "host_costs: ping-pong between two processes failed: %s\n", strerror(errno));
        return 1;
    }
    /* a negative figure is noise larger than the switch: printed as measured, for the reader to see */
    printf("switch_us %.3f\n", (rtt - 2 * rw) / 2);
    return 0;
}
