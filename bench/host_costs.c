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

static int write_byte(int fd)
{
    char c = 'x';

    return write(fd, &c, 1) == 1 ? 0 : -1;
}

static int read_byte(int fd)
{
    char c;

    return read(fd, &c, 1) == 1 ? 0 : -1;
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
    int fds[2];
    double t0;

    if (pipe(fds) != 0)
        return -1;
    t0 = now_us();
    for (long i = 0; i < n; i++) {
        if (write_byte(fds[1]) != 0 || read_byte(fds[0]) != 0) {
            close(fds[0]);
            close(fds[1]);
            return -1;
        }
    }
    *out = (now_us() - t0) / n;
    close(fds[0]);
    close(fds[1]);
    return 0;
}

/* The child echoes every byte back; both block in read, so each hop is a switch. */
static int ping_pong_us(long n, double *out)
{
    int to_child[2], to_parent[2], status, failed = 0;
    pid_t pid;
    double t0;

    if (pipe(to_child) != 0)
        return -1;
    if (pipe(to_parent) != 0) {
        close(to_child[0]);
        close(to_child[1]);
        return -1;
    }
    if ((pid = fork()) < 0)
        return -1;
    if (pid == 0) {
        for (long i = 0; i < n; i++)
            if (read_byte(to_child[0]) != 0 || write_byte(to_parent[1]) != 0)
                _exit(1);
        _exit(0);
    }
    t0 = now_us();
    for (long i = 0; i < n && !failed; i++)
        failed = write_byte(to_child[1]) != 0 || read_byte(to_parent[0]) != 0;
    *out = (now_us() - t0) / n;
    close(to_child[0]);
    close(to_child[1]);
    close(to_parent[0]);
    close(to_parent[1]);
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        failed = 1;
    return failed ? -1 : 0;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 200000;
    double rw, rtt;

    if (n < 10) {
        fprintf(stderr, "host_costs: iterations must be at least 10\n");
        return 2;
    }
    printf("syscall_us %.3f\n", null_syscall_us(n));
    if (pipe_rw_us(n, &rw) != 0) {
        fprintf(stderr, "host_costs: pipe test failed: %s\n", strerror(errno));
        return 1;
    }
    printf("pipe_rw_us %.3f\n", rw);
    if (ping_pong_us(n / 10, &rtt) != 0) {
        fprintf(stderr, "host_costs: ping-pong test failed: %s\n", strerror(errno));
        return 1;
    }
    printf("switch_us %.3f\n", (rtt - 2 * rw) / 2);
    return 0;
}
