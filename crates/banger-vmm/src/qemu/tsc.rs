//! The host's TSC rate, handed to a TCG guest so that its kernel need not
//! calibrate the TSC itself.

/// The host's TSC rate in kHz, measured once against the monotonic clock.
///
/// Why: under TCG the guest reads the host TSC, and microvm has no HPET or
/// ACPI PM timer, so the kernel can calibrate the TSC only against the PIT,
/// a timing-sensitive loop that fails when the host is busy ("tsc: Marking
/// TSC unstable due to could not calculate TSC khz"); the guest then hangs
/// with no usable clock. Handing it the rate (`tsc_early_khz=`) and
/// skipping the watchdog (`tsc=reliable`) makes boot independent of load:
/// measured here, three parallel boots on a loaded 2-core host went from
/// hanging to ready in ~4 s.
pub fn host_tsc_khz() -> Option<u64> {
    static KHZ: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *KHZ.get_or_init(measure_tsc_khz)
}

#[cfg(target_arch = "x86_64")]
fn measure_tsc_khz() -> Option<u64> {
    // A (tsc, time) pair whose TSC reads bracket the clock read tightly: a
    // preemption between the two reads (likely on the busy hosts this fix
    // is for) would otherwise skew the rate by the length of the preemption.
    let pair = || {
        let mut best: Option<(u64, u64, std::time::Instant)> = None;
        for _ in 0..100 {
            // SAFETY: rdtsc has no preconditions on x86_64.
            let a = unsafe { std::arch::x86_64::_rdtsc() };
            let t = std::time::Instant::now();
            // SAFETY: as above.
            let b = unsafe { std::arch::x86_64::_rdtsc() };
            let spread = b.wrapping_sub(a);
            if best.is_none_or(|(s, _, _)| spread < s) {
                best = Some((spread, a + spread / 2, t));
            }
            if spread < 4_000 {
                break;
            }
        }
        best.map(|(_, c, t)| (c, t))
    };
    let (c0, t0) = pair()?;
    std::thread::sleep(std::time::Duration::from_millis(50));
    let (c1, t1) = pair()?;
    let ns = t1.duration_since(t0).as_nanos();
    let khz = u128::from(c1.checked_sub(c0)?) * 1_000_000 / ns.max(1);
    // Round to 10 kHz: the measurement is not finer than that, and a stable
    // value keeps the command line (and logs) the same across boots.
    let khz = u64::try_from(khz).ok()? / 10 * 10;
    (khz > 0).then_some(khz)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_tsc_khz() -> Option<u64> {
    None
}
