// Step profile (`ROCMFORGE_STEP_PROFILE=1`, src/backend/gpu/profile.rs): after every launch the
// device launches `profile_stamp`, one thread that waits for the kernel before it (PDL or plain
// stream order), reads the global nanosecond timer and adds the time since the previous stamp to
// the kernel's row. acc[0] holds the previous stamp's time; row r is acc[2 + 2r] (ns) and
// acc[3 + 2r] (calls). Row -1 only sets the time (the first stamp of a profile).
#include "compat.h"

RF_KERNEL void profile_stamp(u64* acc, int row) {
    RF_PDL_WAIT();
#if defined(RF_CUDA)
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
#else
    // No nanosecond timer is read on HIP: the host never enables the profile there.
    u64 t = 0;
#endif
    const u64 last = acc[0];
    if (row >= 0 && last != 0) {
        acc[2 + 2 * row] += t - last;
        acc[3 + 2 * row] += 1;
    }
    acc[0] = t;
}
