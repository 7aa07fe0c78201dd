//! Which instruction set the kernels use, detected once at run time.
//!
//! Every kernel has a scalar path (the reference, and what runs on any CPU), an AVX2 path
//! (AVX2 + FMA + F16C: every x86-64 CPU since 2013-2015, and what CI machines have) and an
//! AVX-512 path (F, BW, VL and VNNI: `vpdpbusd` multiplies 64 bytes by 64 bytes into 16
//! 32-bit sums in one instruction). `CRUNCH_KERNELS=scalar|avx2|avx512` caps the choice, so
//! each path can be run and benchmarked on a machine that has the larger one.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

impl Isa {
    /// The best instruction set this CPU supports, capped by `CRUNCH_KERNELS` if set.
    pub fn detect() -> Isa {
        static CHOSEN: OnceLock<Isa> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let best = Self::best_supported();
            match std::env::var("CRUNCH_KERNELS").ok().as_deref() {
                Some("scalar") => Isa::Scalar,
                Some("avx2") => best.min(Isa::Avx2),
                _ => best,
            }
        })
    }

    /// Every instruction set this CPU can run, the scalar one first (for tests).
    pub fn available() -> Vec<Isa> {
        let best = Self::best_supported();
        [Isa::Scalar, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&i| i <= best)
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512-vnni",
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn best_supported() -> Isa {
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma") && has!("f16c");
        let avx512 =
            avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni");
        if avx512 {
            Isa::Avx512
        } else if avx2 {
            Isa::Avx2
        } else {
            Isa::Scalar
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn best_supported() -> Isa {
        Isa::Scalar
    }
}
