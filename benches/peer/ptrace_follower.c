/*
 * The ptrace peer for benches/overhead.rs: the smallest correct ptrace follower.
 *
 *   ptrace_follower COMMAND [ARG]...
 *
 * Runs COMMAND as its child and follows it and every process and thread it creates
 * (PTRACE_SEIZE with PTRACE_O_TRACEFORK, TRACEVFORK, TRACECLONE, TRACEEXEC and EXITKILL; no
 * syscall stops). It records nothing: each stop is resumed as soon as it is reported, so
 * this is the floor of what following a process tree with ptrace costs.
 *
 *   - an event stop (fork, vfork, clone, exec, a new tracee's first stop): PTRACE_CONT;
 *   - a signal-delivery-stop: PTRACE_CONT with the signal, so it is delivered unchanged;
 *   - a group-stop (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU): PTRACE_LISTEN, so the tracee stays
 *     stopped until a SIGCONT, as it would untraced.
 *
 * Exits with COMMAND's exit code (128 + the signal if a signal killed it) once COMMAND is
 * gone and no tracee is left; 127 if COMMAND could not be run.
 *
 * With PTRACE_FOLLOWER_REPORT=1 in the environment it also does the least a follower that
 * reports events must: it names each new child (PTRACE_GETEVENTMSG at each fork, vfork and
 * clone event) and writes one 32-byte record per fork, exec and exit into a pipe, which a
 * reader process drains (a blocking read per wake-up, nothing else).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OPTIONS                                                                             \
    (PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC | \
     PTRACE_O_EXITKILL)

static int is_stop_signal(int sig) {
    return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

/* The reporting variant's pipe; -1 when not reporting. */
static int report_fd = -1;

static void report(int kind, pid_t a, long b) {
    if (report_fd < 0) return;
    long rec[4] = {kind, a, b, 0};
    (void)!write(report_fd, rec, sizeof rec);
}

static void start_reader(void) {
    int p[2];
    if (pipe(p) < 0) { perror("pipe"); exit(127); }
    /* Forked twice, so that it is not this process's child: the loop below waits for
     * every child, and ends when none is left. It ends at the pipe's end of file. */
    pid_t r = fork();
    if (r == 0) {
        if (fork() == 0) {
            close(p[1]);
            char buf[65536];
            while (read(p[0], buf, sizeof buf) > 0) {}
        }
        _exit(0);
    }
    waitpid(r, NULL, 0);
    close(p[0]);
    report_fd = p[1];
}

int main(int argc, char **argv) {
    const char *rep = getenv("PTRACE_FOLLOWER_REPORT");
    if (rep && strcmp(rep, "1") == 0) start_reader();
    if (argc < 2) {
        fprintf(stderr, "usage: %s COMMAND [ARG]...\n", argv[0]);
        return 2;
    }
    pid_t root = fork();
    if (root < 0) { perror("fork"); return 127; }
    if (root == 0) {
        /* Wait, stopped, to be seized, so that the exec is followed too. */
        raise(SIGSTOP);
        execvp(argv[1], argv + 1);
        perror(argv[1]);
        _exit(127);
    }
    int status;
    if (waitpid(root, &status, WUNTRACED) != root || !WIFSTOPPED(status)) {
        fprintf(stderr, "the child did not stop\n");
        return 127;
    }
    if (ptrace(PTRACE_SEIZE, root, 0L, (long)OPTIONS) < 0) {
        perror("PTRACE_SEIZE");
        kill(root, SIGKILL);
        return 127;
    }
    /* Ends its stop; what the tracee reports on the way (an event stop, the SIGCONT) is
     * resumed by the loop like anything else. */
    kill(root, SIGCONT);

    int code = 127;
    for (;;) {
        pid_t pid = waitpid(-1, &status, __WALL);
        if (pid < 0) {
            if (errno == EINTR) continue;
            break; /* ECHILD: no child and no tracee left */
        }
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
            report(3, pid, status);
            if (pid == root)
                code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            continue;
        }
        if (!WIFSTOPPED(status)) continue;
        int sig = WSTOPSIG(status), event = (unsigned)status >> 16;
        /* A tracee killed meanwhile makes these fail with ESRCH; its exit comes next. */
        if (report_fd >= 0 && (event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_VFORK ||
                               event == PTRACE_EVENT_CLONE)) {
            unsigned long child = 0;
            ptrace(PTRACE_GETEVENTMSG, pid, 0L, &child);
            report(1, pid, (long)child);
        } else if (event == PTRACE_EVENT_EXEC) {
            report(2, pid, 0);
        }
        if (event == PTRACE_EVENT_STOP && is_stop_signal(sig))
            ptrace(PTRACE_LISTEN, pid, 0L, 0L);
        else if (event != 0)
            ptrace(PTRACE_CONT, pid, 0L, 0L);
        else
            ptrace(PTRACE_CONT, pid, 0L, (long)sig);
    }
    return code;
}
