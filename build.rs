//! Links the unwinder statically (`libgcc_eh.a`) instead of `libgcc_s.so.1`, which std asks for
//! on glibc. The shared one costs every start a library to load and a constructor
//! (`__cpu_indicator_init`, which runs `cpuid`, emulated and slow on a VM): about 0.1 to
//! 0.2 ms of `proc_box -- /bin/true` (doc/benchmarks.md). The archive is linked first, so
//! `--as-needed` drops `libgcc_s` once nothing is left for it to resolve. glibc stays shared:
//! a static one crashes on NSS sources it must `dlopen` (see the README's Install section).

fn main() {
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "gnu");
    let static_crt =
        std::env::var("CARGO_CFG_TARGET_FEATURE").is_ok_and(|f| f.split(',').any(|x| x == "crt-static"));
    if gnu && !static_crt {
        println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
