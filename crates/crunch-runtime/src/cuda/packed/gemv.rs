//! The one-row int4 g128 kernel a backend uses ([`Gemv`], decisions 139 and 151): which kernel
//! multiplies a single activation row, and whether products sharing an input run as one
//! launch. `CRUNCH_GEMV` names one for a process; `gpu_packed bench` times them side by side.

use crate::Result;

/// Which kernel multiplies one activation row by int4 g128 weights (decisions 139, 151).
/// `gpu_packed bench` times them side by side; the default is `cc+pdl`, the fastest per token
/// on the H200 (s34: 1.32–1.34 ms per 8B-shaped token, 60–66% of the measured bandwidth,
/// against `wide2+grouped`'s 1.937). `CRUNCH_GEMV` sets it for a whole process ([`Gemv::parse`]:
/// `reference`, `wide2`, `wide4`, `wide2+grouped`, `wide4+grouped`, `cc`, `cc+pdl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gemv {
    /// Decision 132's `mma_u4`/`mma_u4m`: 2 groups of codes per register buffer, one launch
    /// per product.
    Reference,
    /// `mma_u4{,m}_w{2,4}`: `groups` (2 or 4) groups of codes per register buffer; with
    /// `grouped`, products that share their input ([`crate::Backend::linears`]: q/k/v,
    /// gate/up) run as one launch.
    Wide { groups: u8, grouped: bool },
    /// Decision 151's `cc_u4` (`packed/cc.cu`): CUDA-core `dp4a` over whole rows per warp,
    /// grouped as `Wide { grouped: true }`; with `pdl`, launched with programmatic dependent
    /// launch (sm_90+). Symmetric codes only: offsets go to `wide2`'s kernel. At 2–32 rows its
    /// symmetric products run on the int8 tensor cores (`mma_i8_g*`, decision 155; with `pdl`,
    /// the split and the product as PDL launches), where the `wide` variants keep decision
    /// 144's bf16 kernels.
    Cc { pdl: bool },
}

impl Default for Gemv {
    fn default() -> Self {
        Gemv::Cc { pdl: true }
    }
}

impl Gemv {
    /// Every variant, in the order the bench reports them.
    pub const ALL: [Gemv; 7] = [
        Gemv::Reference,
        Gemv::Wide {
            groups: 2,
            grouped: false,
        },
        Gemv::Wide {
            groups: 4,
            grouped: false,
        },
        Gemv::Wide {
            groups: 2,
            grouped: true,
        },
        Gemv::Wide {
            groups: 4,
            grouped: true,
        },
        Gemv::Cc { pdl: false },
        Gemv::Cc { pdl: true },
    ];

    /// The name `parse` reads (and the bench prints).
    pub fn name(self) -> String {
        match self {
            Gemv::Reference => "reference".into(),
            Gemv::Wide { groups, grouped } => {
                format!("wide{groups}{}", if grouped { "+grouped" } else { "" })
            }
            Gemv::Cc { pdl } => format!("cc{}", if pdl { "+pdl" } else { "" }),
        }
    }

    /// One of the names [`Gemv::name`] gives.
    pub fn parse(s: &str) -> Result<Self> {
        Gemv::ALL
            .into_iter()
            .find(|g| g.name() == s)
            .ok_or_else(|| {
                let names: Vec<String> = Gemv::ALL.iter().map(|g| g.name()).collect();
                crate::Error(format!(
                    "CRUNCH_GEMV={s:?}: not a batch-1 kernel variant (one of {})",
                    names.join(", ")
                ))
            })
    }

    /// Whether products sharing an input run as one launch.
    pub fn grouped(self) -> bool {
        matches!(self, Gemv::Wide { grouped: true, .. } | Gemv::Cc { .. })
    }
}
