/*
 * The reference peer for benches/overhead.rs: the smallest useful proc-connector listener.
 *
 * It subscribes to every process event, then loops on a blocking recv(2) of one datagram at
 * a time, timing each event against the kernel's timestamp. It does no tracking and no
 * filtering, so it is the floor of what any proc-connector listener can cost or reach.
 *
 *   cn_listener [-b BYTES] [-s MS] [-p | -m]
 *     -b  ask for this receive buffer with SO_RCVBUFFORCE (default: the system's default)
 *     -s  after the first event, stop reading for MS milliseconds (a stalled consumer)
 *     -p  never sleep: spin on a non-blocking recv (burns a core; shows what the wakeup of
 *         a sleeping reader costs)
 *     -m  mute: after the acknowledgement, read nothing until told to stop. The kernel still
 *         builds and queues every message (until the buffer is full), but nobody waits on
 *         the socket, so no reader is woken: what the sending alone costs the workload
 *
 * Prints "ready" once the kernel acknowledged the subscription. On SIGINT or SIGTERM it
 * prints one line and exits:
 *   events N overflows K p50 X p90 Y p99 Z max W     (latencies in nanoseconds)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SAMPLES (8 * 1024 * 1024)

static volatile sig_atomic_t stop;

static void on_signal(int sig) { (void)sig; stop = 1; }

static long long mono_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static int subscribe(int s, enum proc_cn_mcast_op op) {
    char msg[NLMSG_SPACE(sizeof(struct cn_msg) + sizeof op)];
    memset(msg, 0, sizeof msg);
    struct nlmsghdr *nh = (struct nlmsghdr *)msg;
    struct cn_msg *cn = NLMSG_DATA(nh);
    nh->nlmsg_len = NLMSG_LENGTH(sizeof *cn + sizeof op);
    nh->nlmsg_type = NLMSG_DONE;
    nh->nlmsg_pid = getpid();
    cn->id.idx = CN_IDX_PROC;
    cn->id.val = CN_VAL_PROC;
    cn->len = sizeof op;
    memcpy(cn->data, &op, sizeof op);
    return send(s, msg, nh->nlmsg_len, 0) < 0 ? -1 : 0;
}

int main(int argc, char **argv) {
    int rcvbuf = 0, stall_ms = 0, spin = 0, mute = 0, opt;
    while ((opt = getopt(argc, argv, "b:s:pm")) != -1) {
        if (opt == 'b') rcvbuf = atoi(optarg);
        else if (opt == 's') stall_ms = atoi(optarg);
        else if (opt == 'p') spin = 1;
        else if (opt == 'm') mute = 1;
        else return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a signal ends the blocking recv */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int s = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_CONNECTOR);
    if (s < 0) { perror("socket"); return 1; }
    if (rcvbuf > 0 && setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf) < 0) {
        perror("SO_RCVBUFFORCE");
        return 1;
    }
    struct sockaddr_nl addr = {.nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC, .nl_pid = 0};
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0) { perror("bind"); return 1; }
    if (subscribe(s, PROC_CN_MCAST_LISTEN) < 0) { perror("send"); return 1; }

    long long *lat = malloc(sizeof(long long) * MAX_SAMPLES);
    if (!lat) return 1;
    size_t n = 0, events = 0, overflows = 0;
    int acked = 0;
    char buf[8192] __attribute__((aligned(NLMSG_ALIGNTO)));
    while (!stop) {
        ssize_t len = recv(s, buf, sizeof buf, spin ? MSG_DONTWAIT : 0);
        long long now = mono_ns();
        if (len < 0) {
            if (errno == ENOBUFS) { overflows++; continue; }
            if (errno == EINTR || errno == EAGAIN) continue;
            perror("recv");
            break;
        }
        for (struct nlmsghdr *nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, (size_t)len);
             nh = NLMSG_NEXT(nh, len)) {
            struct cn_msg *cn = NLMSG_DATA(nh);
            struct proc_event *ev = (struct proc_event *)cn->data;
            if (ev->what == PROC_EVENT_NONE) {
                if (!acked) { acked = 1; printf("ready\n"); fflush(stdout); }
                if (mute) {
                    while (!stop) pause();
                    break;
                }
                continue;
            }
            events++;
            if (n < MAX_SAMPLES) lat[n++] = now - (long long)ev->timestamp_ns;
            if (stall_ms > 0) {
                usleep((useconds_t)stall_ms * 1000);
                stall_ms = 0;
            }
        }
    }
    subscribe(s, PROC_CN_MCAST_IGNORE);
    qsort(lat, n, sizeof lat[0], cmp_ll);
#define PCT(p) (n ? lat[(size_t)((double)(n - 1) * (p) + 0.5)] : 0)
    printf("events %zu overflows %zu p50 %lld p90 %lld p99 %lld max %lld\n", events, overflows,
           PCT(0.50), PCT(0.90), PCT(0.99), n ? lat[n - 1] : 0);
    return 0;
}
