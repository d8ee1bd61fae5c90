/* Preloaded ahead of libfaketime into the daemon of the soak run (tests/soak.py), which steps
 * the daemon's wall clock with libfaketime and leaves its monotonic clock alone
 * (FAKETIME_DONT_FAKE_MONOTONIC=1), as an NTP step does.
 *
 * Why: libfaketime 0.9.10 (Debian 12's package) rewrites the deadline of an absolute
 * CLOCK_MONOTONIC sleep even when it does not fake that clock (wolfcw/libfaketime issue 426,
 * fixed in 0.9.11): the kernel gets a negative time, and Python 3.11's time.sleep(), which
 * sleeps that way, fails with EINVAL in every thread that sleeps (paho's reconnect delay, the
 * forwarder's back-off, the modem's reopen wait).  Here those sleeps go to the kernel as they
 * are, which is what 0.9.11 does; every other sleep is libfaketime's.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_nanosleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);

int clock_nanosleep(clockid_t clock_id, int flags, const struct timespec *req,
                    struct timespec *rem) {
    static clock_nanosleep_fn next;
    if (clock_id == CLOCK_MONOTONIC && (flags & TIMER_ABSTIME)) {
        /* clock_nanosleep() returns the error number itself, not -1 with errno */
        return syscall(SYS_clock_nanosleep, clock_id, flags, req, rem) == 0 ? 0 : errno;
    }
    if (next == NULL) {
        next = (clock_nanosleep_fn)dlsym(RTLD_NEXT, "clock_nanosleep");
    }
    return next(clock_id, flags, req, rem);
}
