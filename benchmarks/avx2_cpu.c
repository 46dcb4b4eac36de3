/* Preloaded by benchmarks/avx2_cpu.py: the process sees an AVX2 CPU (issue 18's Zen 3) instead of
 * this one. Linux's CPUID faulting (arch_prctl(ARCH_SET_CPUID, 0)) turns every CPUID instruction
 * into a SIGSEGV; the handler runs the real CPUID with faulting briefly off, clears the AVX-512,
 * AMX, AVX-VNNI, AVX512-BF16/FP16 and AVX10 bits, and returns the result in the registers the
 * instruction would have set. The setting is kept across fork and threads and reset by execve
 * (LD_PRELOAD, inherited, loads this again). A fault that is not CPUID gets the default action. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_SET_CPUID
#define ARCH_SET_CPUID 0x1012
#endif
#define BIT(n) (1u << (n))

static long set_cpuid(int enabled) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled); }

static void on_segv(int sig, siginfo_t *info, void *context) {
    (void)sig;
    (void)info;
    greg_t *r = ((ucontext_t *)context)->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* not CPUID: a real fault, fatal on return */
        signal(SIGSEGV, SIG_DFL);
        return;
    }
    unsigned int leaf = (unsigned int)r[REG_RAX], sub = (unsigned int)r[REG_RCX], a, b, c, d;
    set_cpuid(1);
    __cpuid_count(leaf, sub, a, b, c, d);
    set_cpuid(0);
    if (leaf == 7 && sub == 0) {
        /* EBX: AVX512F, DQ, IFMA, PF, ER, CD, BW, VL */
        b &= ~(BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31));
        /* ECX: AVX512_VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ */
        c &= ~(BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14));
        /* EDX: AVX512_4VNNIW, 4FMAPS, VP2INTERSECT, AMX-BF16, AVX512_FP16, AMX-TILE, AMX-INT8 */
        d &= ~(BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25));
    } else if (leaf == 7 && sub == 1) {
        a &= ~(BIT(4) | BIT(5) | BIT(21) | BIT(23)); /* AVX-VNNI, AVX512_BF16, AMX-FP16, AVX-IFMA */
        d &= ~(BIT(4) | BIT(5) | BIT(8) | BIT(19));  /* AVX-VNNI-INT8, AVX-NE-CONVERT, AMX-COMPLEX, AVX10 */
    } else if (leaf == 0x1d || leaf == 0x1e || leaf == 0x24) { /* AMX tile information, AVX10 */
        a = b = c = d = 0;
    }
    r[REG_RAX] = a;
    r[REG_RBX] = b;
    r[REG_RCX] = c;
    r[REG_RDX] = d;
    r[REG_RIP] += 2;
}

__attribute__((constructor)) static void mask_cpu(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    if (set_cpuid(0) != 0) {
        static const char msg[] = "avx2_cpu: no CPUID faulting here (arch_prctl ARCH_SET_CPUID failed): CPU not masked\n";
        (void)!write(2, msg, sizeof msg - 1);
    }
}
