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
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#define OPTIONS                                                                             \
    (PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC | \
     PTRACE_O_EXITKILL)

static int is_stop_signal(int sig) {
    return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

int main(int argc, char **argv) {
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
            if (pid == root)
                code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            continue;
        }
        if (!WIFSTOPPED(status)) continue;
        int sig = WSTOPSIG(status), event = (unsigned)status >> 16;
        /* A tracee killed meanwhile makes these fail with ESRCH; its exit comes next. */
        if (event == PTRACE_EVENT_STOP && is_stop_signal(sig))
            ptrace(PTRACE_LISTEN, pid, 0L, 0L);
        else if (event != 0)
            ptrace(PTRACE_CONT, pid, 0L, 0L);
        else
            ptrace(PTRACE_CONT, pid, 0L, (long)sig);
    }
    return code;
}
