/*
 * fdtable.c - what a shared file table costs a thread's socket calls.
 *
 * One thread ping-pongs 300 and 200 bytes over a loopback TCP connection
 * (writev, read, write, read an iteration), three times 300,000
 * iterations, and prints the time an iteration. With a second thread that
 * only sleeps, the process's file table is shared and the kernel takes
 * and drops a reference on the file at every call; when that thread takes
 * a table of its own (unshare(CLONE_FILES)), the calls cost what they cost
 * alone. This is why promptgate's loop takes its own table (gateway/main.c,
 * own_file_table).
 *
 *   make bin/fdtable
 *   for m in alone shared unshared; do taskset -c 0 bin/fdtable $m; done
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int unshared;
static pthread_barrier_t ready; /* the sleeper has its table */

static void *sleeper(void *arg)
{
    (void)arg;
    if (unshared && unshare(CLONE_FILES) != 0)
        perror("unshare");
    pthread_barrier_wait(&ready);
    for (;;)
        pause();
    return NULL;
}

static double now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    const char *mode = argc > 1 ? argv[1] : "alone";
    char buf[512] = {0};
    int one = 1, l, c, s, n = 300000;
    pthread_t t;

    if (strcmp(mode, "alone") != 0) {
        unshared = strcmp(mode, "unshared") == 0;
        pthread_barrier_init(&ready, NULL, 2);
        if (pthread_create(&t, NULL, sleeper, NULL) != 0)
            return 1;
        pthread_barrier_wait(&ready);
    }
    if ((l = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
        bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &alen) < 0 ||
        (c = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
        connect(c, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        (s = accept(l, NULL, NULL)) < 0) {
        perror("fdtable: loopback");
        return 1;
    }
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    for (int r = 0; r < 3; r++) {
        double t0 = now();
        for (int i = 0; i < n; i++) {
            struct iovec v = {buf, 300};
            if (writev(c, &v, 1) != 300 || read(s, buf, sizeof(buf)) <= 0 ||
                write(s, buf, 200) != 200 || read(c, buf, sizeof(buf)) <= 0) {
                perror("fdtable: ping-pong");
                return 1;
            }
        }
        printf("%-8s %.0f ns an iteration\n", mode, (now() - t0) / n * 1e9);
    }
    return 0;
}
