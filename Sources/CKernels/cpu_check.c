// The build's baseline, checked before any of the program runs. The Swift
// code is compiled for x86-64-v3 (AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE) unless
// WAVEFLOW_MARCH says otherwise (Package.swift); on a CPU without those it
// would stop at some instruction with SIGILL, far from any explanation. This
// file is compiled for the plain x86-64 baseline, and its constructor runs
// before main (and before the library's code when WaveFlow is linked into
// another program): on such a CPU it says what to do and exits.
#if defined(__x86_64__) && defined(WF_REQUIRE_X86_64_V3)
#include <cpuid.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/// Whether the CPU (and the OS, for the YMM registers' state) has every
/// x86-64-v3 feature.
static int wf_has_x86_64_v3(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const unsigned leaf1 = (1u << 12) | (1u << 22) | (1u << 27) | (1u << 28) | (1u << 29); // FMA MOVBE OSXSAVE AVX F16C
    if ((c & leaf1) != leaf1) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 6) != 6) return 0; // the OS keeps XMM and YMM state
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const unsigned leaf7 = (1u << 3) | (1u << 5) | (1u << 8); // BMI1 AVX2 BMI2
    if ((b & leaf7) != leaf7) return 0;
    if (!__get_cpuid(0x80000001, &a, &b, &c, &d)) return 0;
    return (c >> 5) & 1; // LZCNT
}

__attribute__((constructor)) static void wf_check_baseline(void) {
    // WAVEFLOW_TEST_CPU_BASELINE=old takes this path on any CPU (the tests' way in).
    const char *pretend = getenv("WAVEFLOW_TEST_CPU_BASELINE");
    if (wf_has_x86_64_v3() && !(pretend && strcmp(pretend, "old") == 0)) return;
    static const char message[] =
        "waveflow: error: this CPU lacks AVX2, FMA or another x86-64-v3 feature this build needs; "
        "build one for it: WAVEFLOW_MARCH=x86-64-v2 swift build -c release (README, \"Other CPUs\")\n";
    ssize_t written = write(2, message, sizeof message - 1);
    (void)written;
    _exit(69);
}
#endif

int wf_build_requires_x86_64_v3(void) {
#if defined(__x86_64__) && defined(WF_REQUIRE_X86_64_V3)
    return 1;
#else
    return 0;
#endif
}
