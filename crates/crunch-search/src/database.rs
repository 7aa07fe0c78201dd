//! The variant database: every block linear layer at every level, made by the recipe driver's
//! methods (`crunch_calib::compress_variants`: from the uncompressed model's calibration
//! inputs, or sequentially per level, see [`LevelInputs`]), and cached on disk so that a
//! second search on the same model and data reuses them.
//!
//! Cache layout: `DIR/<model>-<data>/<level>/<layer>.var`, where `<model>` hashes the model's
//! files, `<data>` the calibration windows and the inputs' kind (0 for a level that reads no
//! data) and `<level>` the level's stage as a recipe writes it. A `.var` file holds one quantized layer (see
//! [`write_variant`]); a file that does not parse or does not match the layer is made again.

use crate::{hash_bytes, Error, Result, HASH_START};
use crunch_calib::{compress_variants, LevelInputs, Progress, Stage};
use crunch_model::model::BLOCK_LINEARS;
use crunch_model::{Checkpoint, LinearId};
use crunch_repr::{
    pack_codes, unpack_codes, Compressed, CompressedLayer, LutSpec, LutWeight, QuantSpec,
    QuantizedWeight,
};
use crunch_runtime::{Backend, QuantCodes};
use std::path::{Path, PathBuf};

/// One level a layer can get: a main compression stage (a method and its settings).
#[derive(Clone, Debug, PartialEq)]
pub struct Level {
    pub stage: Stage,
}

impl Level {
    /// A quantization level: `method` (rtn or gptq) at `bits` with `group_size` (0 = per
    /// channel), asymmetric, every other key at its default.
    pub fn quant(method: &str, bits: u8, group_size: usize) -> Result<Self> {
        Self::quant_with(method, bits, group_size, &[])
    }

    /// [`Level::quant`] with other keys of the stage set too (e.g. `mse_clip = false`).
    pub fn quant_with(
        method: &str,
        bits: u8,
        group_size: usize,
        extra: &[(&str, toml::Value)],
    ) -> Result<Self> {
        let mut t = toml::Table::new();
        t.insert("method".into(), method.into());
        t.insert("bits".into(), i64::from(bits).into());
        t.insert("group_size".into(), (group_size as i64).into());
        for (k, v) in extra {
            t.insert((*k).into(), v.clone());
        }
        let stage = Stage::from_table(t, 1).map_err(|e| Error::Params(e.to_string()))?;
        Ok(Self { stage })
    }

    /// A lookup-table level (method `lut`, decision 143): `bits` with one codebook per row
    /// (`group_size` 0) or per `group_size` columns, every other key at its default.
    pub fn lut(bits: u8, group_size: usize) -> Result<Self> {
        Self::quant_with("lut", bits, group_size, &[])
    }

    /// The stage as a recipe writes it (`method = "gptq", bits = 3, ...`).
    pub fn describe(&self) -> String {
        self.stage.describe()
    }

    /// A short name: `gptq3` (`gptq3g64` for another group size than 128, `gptq3g16s6` with
    /// 6-bit coded group scales, decision 145); a lookup-table
    /// level `lut3` (one codebook per row), `lut3g256` (per 256 columns).
    pub fn short(&self) -> String {
        match self.stage.method.produces() {
            crunch_repr::Produces::Quantized(s) => {
                let g = match s.group_size {
                    Some(128) => String::new(),
                    Some(g) => format!("g{g}"),
                    None => "c".into(),
                };
                let k = s.scale_bits.map_or(String::new(), |k| format!("s{k}"));
                format!("{}{}{g}{k}", self.stage.method.name(), s.bits)
            }
            crunch_repr::Produces::Lut(s) => {
                let g = s.group_size.map_or(String::new(), |g| format!("g{g}"));
                format!("{}{}{g}", self.stage.method.name(), s.bits)
            }
            _ => self.describe(),
        }
    }

    fn needs_data(&self) -> bool {
        self.stage.method.needs_calibration()
    }
}

/// Every block linear layer at every level.
pub struct Database {
    /// The layers, in block order.
    pub units: Vec<LinearId>,
    pub shapes: Vec<(usize, usize)>,
    /// The ladder from small to large by the uniform models' sizes (`build` sorts the levels
    /// it is given).
    pub levels: Vec<Level>,
    /// `[unit][level]`, levels from small to large (`build` sorts the ladder given).
    pub variants: Vec<Vec<CompressedLayer>>,
    /// `[unit][rank]`: the level of each unit's rank-th cheapest variant. The search's
    /// configurations hold ranks, so each unit's costs grow with its rank even where levels of
    /// different kinds order differently by layer shape (a lookup-table level's codebooks
    /// cost 2^bits·16 bits per row, so per weight less on wide rows than a grid's groups:
    /// SmolLM2's down_proj puts `3lut` below `3`, its 576-column layers above). Identity for
    /// ladders of uniform grids.
    pub order: Vec<Vec<usize>>,
    /// Variants read from the cache, and made.
    pub cached: usize,
    pub made: usize,
}

impl Database {
    /// Each unit's cost in bits at each of its ranks (storage bits per weight × weights,
    /// ascending; see [`Database::order`]). An error if two levels of a unit cost the same,
    /// or if the uniform configurations' sizes do not grow in the order of `levels` (the
    /// uniform points and a KL target's bisection read them in that order; `build` sorts
    /// them, so only two levels of the same total size fail here).
    pub fn costs(&self) -> Result<Vec<Vec<f64>>> {
        let mut out = Vec::with_capacity(self.units.len());
        for (u, vars) in self.variants.iter().enumerate() {
            let by_level = self.level_costs(u);
            let costs: Vec<f64> = self.order[u].iter().map(|&l| by_level[l]).collect();
            if costs.windows(2).any(|w| w[1] <= w[0]) {
                return Err(Error::Params(format!(
                    "{}: two levels have the same size ({by_level:?} bits)",
                    self.units[u].full_name()
                )));
            }
            debug_assert_eq!(costs.len(), vars.len());
            out.push(costs);
        }
        let totals = self.uniform_sizes();
        if let Some(i) = (1..totals.len()).find(|&i| totals[i] <= totals[i - 1]) {
            return Err(Error::Params(format!(
                "levels {} and {}: the uniform models' sizes do not grow in the order given \
                 ({:.0} and {:.0} bits); give the levels from small to large, no two of the \
                 same size (a ladder `Database::build` sorted fails here only on a tie)",
                self.levels[i - 1].short(),
                self.levels[i].short(),
                totals[i - 1],
                totals[i]
            )));
        }
        Ok(out)
    }

    /// The uniform model's size of each level, in bits (the ladder's order: ascending).
    pub fn uniform_sizes(&self) -> Vec<f64> {
        uniform_totals(&self.variants, &self.shapes, self.levels.len())
    }

    /// A unit's cost in bits at each level, in the order of `levels`.
    fn level_costs(&self, u: usize) -> Vec<f64> {
        unit_costs(&self.variants[u], self.shapes[u])
    }

    /// The level of unit `u`'s rank `rank`.
    pub fn level_of(&self, u: usize, rank: usize) -> usize {
        self.order[u][rank]
    }

    /// The configuration (ranks) with every unit at `level`.
    pub fn uniform(&self, level: usize) -> Vec<u8> {
        self.order
            .iter()
            .map(|o| o.iter().position(|&l| l == level).unwrap_or(0) as u8)
            .collect()
    }

    /// Reads what `cache` holds for `ckpt`, `windows`, `inputs` and `levels`, makes the rest
    /// (one calibration pass for all missing variants, or one per level for sequential
    /// inputs) and writes them to the cache.
    pub fn build<B: Backend>(
        backend: &B,
        ckpt: &Checkpoint,
        levels: &[Level],
        inputs: LevelInputs,
        windows: Option<&[Vec<u32>]>,
        cache: Option<&Path>,
        progress: &mut dyn Progress,
    ) -> Result<Database> {
        let (units, shapes) = block_units(ckpt)?;
        let dirs: Option<Vec<PathBuf>> = match cache {
            Some(root) => {
                let model = model_hash(&ckpt.path)?;
                let mut data = windows.map_or(0, windows_hash);
                if inputs == LevelInputs::Sequential {
                    // Another database than the independent one of the same data.
                    data = hash_bytes(data, b"sequential");
                }
                Some(
                    levels
                        .iter()
                        .map(|l| {
                            let d = if l.needs_data() { data } else { 0 };
                            let lh = hash_bytes(HASH_START, l.describe().as_bytes());
                            root.join(format!("{model:016x}-{d:016x}"))
                                .join(format!("{lh:016x}"))
                        })
                        .collect(),
                )
            }
            None => None,
        };
        let mut table: Vec<Vec<Option<CompressedLayer>>> =
            vec![vec![None; levels.len()]; units.len()];
        let mut cached = 0;
        if let Some(dirs) = &dirs {
            for (u, id) in units.iter().enumerate() {
                for (l, dir) in dirs.iter().enumerate() {
                    let path = dir.join(format!("{}.var", id.full_name()));
                    if let Some(v) = read_variant(&path, shapes[u]) {
                        table[u][l] = Some(v);
                        cached += 1;
                    }
                }
            }
        }
        let missing: Vec<Vec<bool>> = table
            .iter()
            .map(|row| row.iter().map(|v| v.is_none()).collect())
            .collect();
        let made = missing.iter().flatten().filter(|&&m| m).count();
        if made > 0 {
            let index: std::collections::BTreeMap<String, usize> = units
                .iter()
                .enumerate()
                .map(|(u, id)| (id.full_name(), u))
                .collect();
            let methods: Vec<crunch_calib::Method> =
                levels.iter().map(|l| l.stage.method.clone()).collect();
            let wanted = |name: &str, l: usize| index.get(name).is_some_and(|&u| missing[u][l]);
            let mut failure: Option<Error> = None;
            let mut sink =
                |name: &str, vars: Vec<(usize, CompressedLayer)>| -> crunch_calib::Result<()> {
                    let u = index[name];
                    for (l, v) in vars {
                        if let Some(dirs) = &dirs {
                            let path = dirs[l].join(format!("{name}.var"));
                            if let Err(e) = write_variant(&path, &v) {
                                failure.get_or_insert(e);
                            }
                        }
                        table[u][l] = Some(v);
                    }
                    Ok(())
                };
            compress_variants(
                backend, ckpt, &methods, inputs, windows, &wanted, &mut sink, progress,
            )?;
            if let Some(e) = failure {
                return Err(e);
            }
        }
        let mut variants = Vec::with_capacity(units.len());
        for (u, row) in table.into_iter().enumerate() {
            let mut out = Vec::with_capacity(levels.len());
            for (l, v) in row.into_iter().enumerate() {
                out.push(v.ok_or_else(|| {
                    Error::Params(format!(
                        "{}: level {} made no variant",
                        units[u].full_name(),
                        levels[l].describe()
                    ))
                })?);
            }
            variants.push(out);
        }
        // The ladder from small to large, by the uniform models' sizes (the uniform points and
        // a KL target's bisection read the levels in that order). Sorted here rather than
        // refused: which of two levels is smaller depends on overheads a user should not have
        // to work out (2g32s6 is below 2g64, 3g64s6 below the free 3-bit g128), and a refusal
        // came only after every variant had been made. Stable, so equal sizes keep the order
        // given (`costs` refuses them).
        let totals = uniform_totals(&variants, &shapes, levels.len());
        let mut by_size: Vec<usize> = (0..levels.len()).collect();
        by_size.sort_by(|&a, &b| totals[a].total_cmp(&totals[b]));
        let levels: Vec<Level> = by_size.iter().map(|&l| levels[l].clone()).collect();
        for row in variants.iter_mut() {
            let mut taken: Vec<Option<CompressedLayer>> = row.drain(..).map(Some).collect();
            *row = by_size
                .iter()
                .map(|&l| {
                    taken[l]
                        .take()
                        .expect("a permutation takes each level once")
                })
                .collect();
        }
        let order = rank_order(&variants, &shapes);
        Ok(Database {
            units,
            shapes,
            levels,
            variants,
            order,
            cached,
            made,
        })
    }
}

/// One unit's cost in bits at each of its variants (storage bits per weight × weights).
fn unit_costs(vars: &[CompressedLayer], (r, c): (usize, usize)) -> Vec<f64> {
    vars.iter()
        .map(|v| v.bits_per_weight() * (r * c) as f64)
        .collect()
}

/// Each level's uniform model size in bits (every unit at that level), levels in the order
/// of `variants`' columns.
pub(crate) fn uniform_totals(
    variants: &[Vec<CompressedLayer>],
    shapes: &[(usize, usize)],
    levels: usize,
) -> Vec<f64> {
    let per_unit: Vec<Vec<f64>> = variants
        .iter()
        .zip(shapes)
        .map(|(vars, &shape)| unit_costs(vars, shape))
        .collect();
    (0..levels)
        .map(|l| per_unit.iter().map(|c| c[l]).sum())
        .collect()
}

/// `[unit][rank]`: each unit's levels from its cheapest variant to its dearest (see
/// [`Database::order`]).
pub(crate) fn rank_order(
    variants: &[Vec<CompressedLayer>],
    shapes: &[(usize, usize)],
) -> Vec<Vec<usize>> {
    variants
        .iter()
        .zip(shapes)
        .map(|(vars, &shape)| {
            let cost = unit_costs(vars, shape);
            let mut o: Vec<usize> = (0..vars.len()).collect();
            // Stable: levels of equal cost keep the order given (`costs` refuses them).
            o.sort_by(|&a, &b| cost[a].total_cmp(&cost[b]));
            o
        })
        .collect()
}

/// What a search's fitness swaps into the candidate model: each unit's weight at each level.
pub trait Variants {
    /// The layers in block order, and each one's (rows, cols).
    fn layers(&self) -> (&[LinearId], &[(usize, usize)]);
    /// Levels of `unit`.
    fn levels(&self, unit: usize) -> usize;
    /// A unit's weight at `level` as the model runs it, row-major.
    fn dense(&self, unit: usize, level: usize) -> Vec<f32>;
    /// Weights of all units.
    fn weights(&self) -> usize {
        self.layers().1.iter().map(|(r, c)| r * c).sum()
    }
    /// [`Variants::dense`] into `out` (reused when it has the right length): the same values.
    fn dense_into(&self, unit: usize, level: usize, out: &mut Vec<f32>) {
        *out = self.dense(unit, level);
    }
    /// A unit's weight at `level` as codes on a grid with static groups, where it is exactly
    /// that (no correction, no `g_idx`): what the fitness may keep on the device and expand
    /// there (decision 137). `None` (the default): made dense on the host.
    fn codes(&self, _unit: usize, _level: usize) -> Option<QuantCodes<'_>> {
        None
    }
}

impl Variants for Database {
    fn layers(&self) -> (&[LinearId], &[(usize, usize)]) {
        (&self.units, &self.shapes)
    }

    fn levels(&self, unit: usize) -> usize {
        self.variants[unit].len()
    }

    // `level` is the search's rank of the unit's variant (`Database::order`).
    fn dense(&self, unit: usize, level: usize) -> Vec<f32> {
        self.variants[unit][self.level_of(unit, level)].dense()
    }

    fn dense_into(&self, unit: usize, level: usize, out: &mut Vec<f32>) {
        crate::swap::dense_into(&self.variants[unit][self.level_of(unit, level)], out);
    }

    fn codes(&self, unit: usize, level: usize) -> Option<QuantCodes<'_>> {
        crate::swap::codes_of(&self.variants[unit][self.level_of(unit, level)])
    }
}

/// The block linear layers in block order, and each one's (rows, cols).
pub type Units = (Vec<LinearId>, Vec<(usize, usize)>);

/// Every block linear layer of `ckpt` in block order, with its (rows, cols).
pub fn block_units(ckpt: &Checkpoint) -> Result<Units> {
    let units: Vec<LinearId> = (0..ckpt.config.layers)
        .flat_map(|layer| {
            BLOCK_LINEARS
                .iter()
                .map(move |&name| LinearId { layer, name })
        })
        .collect();
    let mut shapes = Vec::with_capacity(units.len());
    for id in &units {
        let full = format!("{}.weight", id.full_name());
        match ckpt.weights.info(&full).map(|i| i.shape) {
            Some(s) if s.len() == 2 => shapes.push((s[0], s[1])),
            _ => {
                return Err(Error::BadFile {
                    path: ckpt.path.clone(),
                    problem: format!("missing or not a matrix: `{full}`"),
                })
            }
        }
    }
    Ok((units, shapes))
}

/// A hash of the model's files (a file, or a directory's files, by name and content).
pub fn model_hash(path: &Path) -> Result<u64> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    if path.is_dir() {
        for e in std::fs::read_dir(path).map_err(io)? {
            let p = e.map_err(io)?.path();
            if p.is_file() {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut h = HASH_START;
    for f in files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned());
        h = hash_bytes(h, name.unwrap_or_default().as_bytes());
        let bytes = std::fs::read(&f).map_err(|source| Error::Io {
            path: f.clone(),
            source,
        })?;
        h = hash_bytes(h, &bytes);
    }
    Ok(h)
}

/// A hash of calibration windows (their number, lengths and token ids).
pub fn windows_hash(windows: &[Vec<u32>]) -> u64 {
    let mut h = hash_bytes(HASH_START, &(windows.len() as u64).to_le_bytes());
    for w in windows {
        h = hash_bytes(h, &(w.len() as u64).to_le_bytes());
        let bytes: Vec<u8> = w.iter().flat_map(|t| t.to_le_bytes()).collect();
        h = hash_bytes(h, &bytes);
    }
    h
}

const MAGIC: &[u8; 8] = b"CRVAR\x01\0\0";
/// A quantized variant with coded group scales (decision 145): version 1's layout with the
/// scale width (u8) after `symmetric`; the scales are stored as their f16 values (the cache
/// is not the file whose size is measured), checked on read to lie on their rows' grids.
const MAGIC_CODED: &[u8; 8] = b"CRVAR\x02\0\0";

/// Writes a quantized variant (other kinds are not cached: `Ok` without writing) to a temporary
/// name, then renames it into place. Layout, little-endian: magic `CRVAR\1\0\0`; rows, cols
/// (u64); bits, symmetric (u8); group size (u64, 0 = per channel); method name (u64 length,
/// bytes); the codes packed at `bits` (`crunch_repr::pack_codes`); f16 scales and u8 zero
/// points, `rows × groups` each.
///
/// A lookup-table variant: magic `CRLUT\1\0\0`; rows, cols (u64); bits (u8); group size
/// (u64, 0 = per row); method name; the codes packed at `bits`; the f16 levels,
/// `rows × groups × 2^bits`.
pub fn write_variant(path: &Path, v: &CompressedLayer) -> Result<()> {
    if v.correction.is_some() {
        return Ok(());
    }
    let b = match &v.main {
        Compressed::Quantized(q) if q.g_idx.is_none() => quantized_bytes(q, &v.method),
        Compressed::Lut(q) => lut_bytes(q, &v.method),
        _ => return Ok(()),
    };
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension(format!("var.tmp{}", std::process::id()));
    std::fs::write(&tmp, &b).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

const LUT_MAGIC: &[u8; 8] = b"CRLUT\x01\0\0";

fn lut_bytes(q: &LutWeight, method: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(q.codes.len() + 64);
    b.extend_from_slice(LUT_MAGIC);
    b.extend_from_slice(&(q.rows as u64).to_le_bytes());
    b.extend_from_slice(&(q.cols as u64).to_le_bytes());
    b.push(q.spec.bits);
    b.extend_from_slice(&(q.spec.group_size.unwrap_or(0) as u64).to_le_bytes());
    b.extend_from_slice(&(method.len() as u64).to_le_bytes());
    b.extend_from_slice(method.as_bytes());
    b.extend_from_slice(&pack_codes(&q.codes, q.spec.bits));
    for s in &q.levels {
        b.extend_from_slice(&s.to_bits().to_le_bytes());
    }
    b
}

/// A lookup-table variant of `lut_bytes`, after its magic.
fn read_lut(mut r: Reader, shape: (usize, usize)) -> Option<CompressedLayer> {
    let (rows, cols) = (r.u64()? as usize, r.u64()? as usize);
    if (rows, cols) != shape {
        return None;
    }
    let bits = r.take(1)?[0];
    let group = r.u64()? as usize;
    let name_len = r.u64()? as usize;
    let method = String::from_utf8(r.take(name_len)?.to_vec()).ok()?;
    let spec = LutSpec::new(bits, (group != 0).then_some(group));
    spec.validate(cols).ok()?;
    let n = rows.checked_mul(cols)?;
    let codes = unpack_codes(r.take(crunch_repr::packed_len(n, bits))?, bits, n).ok()?;
    let per = rows
        .checked_mul(spec.n_groups(cols))?
        .checked_mul(spec.levels())?;
    let levels = crunch_repr::f16s_le(r.take(per.checked_mul(2)?)?);
    if r.at != r.b.len() {
        return None;
    }
    let q = LutWeight {
        spec,
        rows,
        cols,
        codes,
        levels,
    };
    q.validate().ok()?;
    Some(CompressedLayer::new(&method, Compressed::Lut(q)))
}

fn quantized_bytes(q: &QuantizedWeight, method: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(q.codes.len() + 64);
    // Free scales keep version 1 (caches written before decision 145 stay valid).
    b.extend_from_slice(if q.spec.scale_bits.is_some() {
        MAGIC_CODED
    } else {
        MAGIC
    });
    b.extend_from_slice(&(q.rows as u64).to_le_bytes());
    b.extend_from_slice(&(q.cols as u64).to_le_bytes());
    b.push(q.spec.bits);
    b.push(q.spec.symmetric as u8);
    if let Some(k) = q.spec.scale_bits {
        b.push(k);
    }
    b.extend_from_slice(&(q.spec.group_size.unwrap_or(0) as u64).to_le_bytes());
    b.extend_from_slice(&(method.len() as u64).to_le_bytes());
    b.extend_from_slice(method.as_bytes());
    b.extend_from_slice(&pack_codes(&q.codes, q.spec.bits));
    for s in &q.scales {
        b.extend_from_slice(&s.to_bits().to_le_bytes());
    }
    b.extend_from_slice(&q.zeros);
    b
}

/// Reads a variant written by [`write_variant`] for a layer of `shape`; `None` when the file
/// is missing, truncated, inconsistent or of another shape (it is then made again).
pub fn read_variant(path: &Path, shape: (usize, usize)) -> Option<CompressedLayer> {
    let b = std::fs::read(path).ok()?;
    let mut r = Reader { b: &b, at: 0 };
    let magic = r.take(8)?;
    if magic == LUT_MAGIC {
        return read_lut(r, shape);
    }
    let coded = magic == MAGIC_CODED;
    if magic != MAGIC && !coded {
        return None;
    }
    let (rows, cols) = (r.u64()? as usize, r.u64()? as usize);
    if (rows, cols) != shape {
        return None;
    }
    let (bits, symmetric) = (r.take(1)?[0], r.take(1)?[0] != 0);
    let scale_bits = if coded { Some(r.take(1)?[0]) } else { None };
    let group = r.u64()? as usize;
    let name_len = r.u64()? as usize;
    let method = String::from_utf8(r.take(name_len)?.to_vec()).ok()?;
    let spec =
        QuantSpec::new(bits, (group != 0).then_some(group), symmetric).with_scale_bits(scale_bits);
    spec.validate(cols).ok()?;
    let n = rows.checked_mul(cols)?;
    let packed = r.take(crunch_repr::packed_len(n, bits))?;
    let codes = unpack_codes(packed, bits, n).ok()?;
    let per = rows.checked_mul(spec.n_groups(cols))?;
    let scales = crunch_repr::f16s_le(r.take(per.checked_mul(2)?)?);
    let zeros = r.take(per)?.to_vec();
    if r.at != b.len() {
        return None;
    }
    let q = QuantizedWeight {
        spec,
        rows,
        cols,
        codes,
        scales,
        zeros,
        g_idx: None,
    };
    q.validate().ok()?;
    Some(CompressedLayer::new(&method, Compressed::Quantized(q)))
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    fn quantized(rows: usize, cols: usize, bits: u8, group: Option<usize>) -> CompressedLayer {
        let spec = QuantSpec::new(bits, group, false);
        let n = rows * spec.n_groups(cols);
        let q = QuantizedWeight {
            spec,
            rows,
            cols,
            codes: (0..rows * cols)
                .map(|i| (i % 8) as u8 & spec.maxq())
                .collect(),
            scales: vec![f16::from_f32(0.5); n],
            zeros: vec![1; n],
            g_idx: None,
        };
        CompressedLayer::new("gptq", Compressed::Quantized(q))
    }

    fn lut(rows: usize, cols: usize, bits: u8) -> CompressedLayer {
        let spec = LutSpec::new(bits, None);
        let k = spec.levels();
        let q = LutWeight {
            spec,
            rows,
            cols,
            codes: (0..rows * cols).map(|i| (i * 5 % k) as u8).collect(),
            levels: (0..rows * k)
                .map(|i| f16::from_f32((i % k) as f32 - 3.0))
                .collect(),
        };
        CompressedLayer::new("lut", Compressed::Lut(q))
    }

    /// SmolLM2's two widths: `3lut` is below `3` (g128) on a 1536-column row and above it on
    /// a 576-column one; the search's ranks follow each unit's costs and map back to levels.
    #[test]
    fn ranks_follow_each_units_costs() {
        let levels = vec![
            Level::quant("gptq", 3, 128).unwrap(),
            Level::lut(3, 0).unwrap(),
            Level::quant("gptq", 3, 64).unwrap(),
        ];
        assert_eq!(
            levels.iter().map(Level::short).collect::<Vec<_>>(),
            ["gptq3", "lut3", "gptq3g64"]
        );
        let shapes = vec![(8, 576), (2, 1536)];
        let variants: Vec<Vec<CompressedLayer>> = shapes
            .iter()
            .map(|&(r, c)| {
                vec![
                    quantized(r, c, 3, Some(128)),
                    lut(r, c, 3),
                    quantized(r, c, 3, Some(64)),
                ]
            })
            .collect();
        let db = Database {
            units: vec![
                LinearId {
                    layer: 0,
                    name: "mlp.up_proj",
                },
                LinearId {
                    layer: 0,
                    name: "mlp.down_proj",
                },
            ],
            shapes,
            levels,
            order: vec![vec![0, 1, 2], vec![1, 0, 2]],
            variants,
            cached: 0,
            made: 0,
        };
        let costs = db.costs().unwrap();
        for c in &costs {
            assert!(c.windows(2).all(|w| w[0] < w[1]), "{c:?}");
        }
        assert_eq!(db.level_of(1, 0), 1);
        assert_eq!(db.uniform(1), vec![1, 0]);
        assert_eq!(db.uniform(0), vec![0, 1]);
        // Rank 0 of the down projection is its LUT variant.
        assert_eq!(db.dense(1, 0), db.variants[1][1].dense());
        // A ladder whose uniform sizes shrink is refused, naming the levels.
        let mut bad = db;
        bad.levels.swap(0, 2);
        bad.variants.iter_mut().for_each(|v| v.swap(0, 2));
        bad.order = vec![vec![2, 1, 0], vec![1, 2, 0]];
        let e = bad.costs().unwrap_err().to_string();
        assert!(e.contains("from small to large"), "{e}");
    }

    #[test]
    fn lut_variants_round_trip_through_the_cache() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("x/v.var");
        let v = lut(3, 40, 2);
        write_variant(&path, &v).unwrap();
        assert_eq!(read_variant(&path, (3, 40)), Some(v));
        assert_eq!(read_variant(&path, (3, 41)), None);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(read_variant(&path, (3, 40)), None);
    }

    #[test]
    fn coded_scale_variants_round_trip_through_the_cache() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("x/v.var");
        let (rows, cols) = (3, 32);
        let spec = QuantSpec::new(3, Some(16), false).with_scale_bits(Some(6));
        let rs = [0.5f32, 0.25, 1.0].map(f16::from_f32);
        let scales = crunch_repr::decode_scales(&rs, &[63, 5, 12, 63, 63, 1], 2, 6).unwrap();
        let q = QuantizedWeight {
            spec,
            rows,
            cols,
            codes: (0..rows * cols).map(|i| (i % 8) as u8).collect(),
            scales,
            zeros: vec![4; rows * 2],
            g_idx: None,
        };
        let v = CompressedLayer::new("gptq", Compressed::Quantized(q));
        write_variant(&path, &v).unwrap();
        assert_eq!(read_variant(&path, (rows, cols)), Some(v.clone()));
        // A scale moved off its row's grid is refused (the variant is made again).
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - rows * 2 - 2 * rows * 2 + 2;
        bytes[at] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_variant(&path, (rows, cols)), None);
    }
}
