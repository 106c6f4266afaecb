//! The WGSL sources (shaders/, one file per op family, loaded unchanged by the browser) and
//! their entry points. Workgroup sizes and tile shapes are named constants in the WGSL; this
//! module reads them from the source text, so no size is written twice.

use super::super::EngineError;

/// One shader file of shaders/.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShaderFile {
    /// File name under shaders/.
    pub name: &'static str,
    /// Its text.
    pub source: &'static str,
}

macro_rules! shader {
    ($name:literal) => {
        ShaderFile {
            name: $name,
            source: include_str!(concat!("../../../shaders/", $name)),
        }
    };
}

pub const EMBED: ShaderFile = shader!("embed.wgsl");
pub const NORM: ShaderFile = shader!("norm.wgsl");
pub const MATMUL: ShaderFile = shader!("matmul.wgsl");
/// Compiled after matmul.wgsl's text, on devices with subgroups only (see the file).
pub const MATVEC_SUBGROUP: ShaderFile = shader!("matvec_subgroup.wgsl");
pub const ELEMENTWISE: ShaderFile = shader!("elementwise.wgsl");
pub const ROPE: ShaderFile = shader!("rope.wgsl");
pub const ATTENTION: ShaderFile = shader!("attention.wgsl");
pub const TOPK: ShaderFile = shader!("topk.wgsl");
pub const QUANT: ShaderFile = shader!("quant.wgsl");

/// Every shader file.
pub const FILES: [ShaderFile; 8] = [
    EMBED,
    NORM,
    MATMUL,
    ELEMENTWISE,
    ROPE,
    ATTENTION,
    TOPK,
    QUANT,
];

/// A compute entry point: one pipeline each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    Embed,
    Norm,
    Matvec,
    MatvecMerged,
    MatvecSubgroup,
    Matmul,
    Add,
    BiasAdd,
    Gelu,
    SiluMul,
    Rope,
    QkvRope,
    AttnPartial,
    AttnCombine,
    TopK,
    RowScales,
    Quantize,
    Dequantize,
}

impl Kernel {
    /// Every kernel, for warming the pipeline cache.
    pub const ALL: [Kernel; 18] = [
        Kernel::Embed,
        Kernel::Norm,
        Kernel::Matvec,
        Kernel::MatvecMerged,
        Kernel::MatvecSubgroup,
        Kernel::Matmul,
        Kernel::Add,
        Kernel::BiasAdd,
        Kernel::Gelu,
        Kernel::SiluMul,
        Kernel::Rope,
        Kernel::QkvRope,
        Kernel::AttnPartial,
        Kernel::AttnCombine,
        Kernel::TopK,
        Kernel::RowScales,
        Kernel::Quantize,
        Kernel::Dequantize,
    ];

    /// The file holding the entry point.
    pub fn file(self) -> ShaderFile {
        match self {
            Kernel::Embed => EMBED,
            Kernel::Norm => NORM,
            Kernel::Matvec | Kernel::MatvecMerged | Kernel::Matmul => MATMUL,
            Kernel::MatvecSubgroup => MATVEC_SUBGROUP,
            Kernel::Add | Kernel::BiasAdd | Kernel::Gelu | Kernel::SiluMul => ELEMENTWISE,
            Kernel::Rope | Kernel::QkvRope => ROPE,
            Kernel::AttnPartial | Kernel::AttnCombine => ATTENTION,
            Kernel::TopK => TOPK,
            Kernel::RowScales | Kernel::Quantize | Kernel::Dequantize => QUANT,
        }
    }

    /// The entry point's name in its file.
    pub fn entry(self) -> &'static str {
        match self {
            Kernel::Embed => "embed",
            Kernel::Norm => "norm",
            Kernel::Matvec => "matvec",
            Kernel::MatvecMerged => "matvec_merged",
            Kernel::MatvecSubgroup => "matvec_sg",
            Kernel::Matmul => "matmul",
            Kernel::Add => "add",
            Kernel::BiasAdd => "bias_add",
            Kernel::Gelu => "gelu",
            Kernel::SiluMul => "silu_mul",
            Kernel::Rope => "rope",
            Kernel::QkvRope => "qkv_rope",
            Kernel::AttnPartial => "attn_partial",
            Kernel::AttnCombine => "attn_combine",
            Kernel::TopK => "topk",
            Kernel::RowScales => "row_scales",
            Kernel::Quantize => "quantize",
            Kernel::Dequantize => "dequantize",
        }
    }
}

/// The sizes the host needs to size dispatches, read from the WGSL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consts {
    /// Threads of the element-wise kernels (embed, elementwise, rope, quantize).
    pub embed_wg: u32,
    pub elem_wg: u32,
    pub rope_wg: u32,
    pub quant_wg: u32,
    /// Threads of a matvec workgroup, the lanes per output feature on a GPU, the fewest lanes
    /// the kernel takes, and the most tokens one matvec handles.
    pub matvec_wg: u32,
    pub matvec_max_lanes: u32,
    pub matvec_min_lanes: u32,
    pub matvec_max_t: u32,
    /// Largest K and heads x splits of a matvec whose input is attention's merged partials.
    pub matvec_combine_max_k: u32,
    pub matvec_combine_max_slots: u32,
    /// Side of the matmul output tile.
    pub mm_tile: u32,
    /// Keys per attention block (threads of attn_partial), the largest head size, and the
    /// threads of attn_combine.
    pub att_wg: u32,
    pub att_max_hd: u32,
    pub combine_wg: u32,
    /// Candidates one top-k workgroup reduces.
    pub topk_chunk: u32,
}

impl Consts {
    /// Reads every constant from the shader sources.
    pub fn from_shaders() -> Result<Self, EngineError> {
        let get = |f: ShaderFile, name: &str| {
            wgsl_const(f.source, name).ok_or_else(|| {
                EngineError::Gpu(format!(
                    "shaders/{}: no `const {name}: u32 = ...;` the host can read",
                    f.name
                ))
            })
        };
        Ok(Consts {
            embed_wg: get(EMBED, "EMBED_WG")?,
            elem_wg: get(ELEMENTWISE, "ELEM_WG")?,
            rope_wg: get(ROPE, "ROPE_WG")?,
            quant_wg: get(QUANT, "QUANT_WG")?,
            matvec_wg: get(MATMUL, "MATVEC_WG")?,
            matvec_max_lanes: get(MATMUL, "MATVEC_MAX_LANES")?,
            matvec_min_lanes: get(MATMUL, "MATVEC_PART")?,
            matvec_max_t: get(MATMUL, "MATVEC_MAX_T")?,
            matvec_combine_max_k: get(MATMUL, "MATVEC_COMBINE_MAX_K")?,
            matvec_combine_max_slots: get(MATMUL, "MATVEC_COMBINE_MAX_SLOTS")?,
            mm_tile: get(MATMUL, "MM_TILE")?,
            att_wg: get(ATTENTION, "ATT_WG")?,
            att_max_hd: get(ATTENTION, "ATT_MAX_HD")?,
            combine_wg: get(ATTENTION, "COMBINE_WG")?,
            topk_chunk: get(TOPK, "TOPK_CHUNK")?,
        })
    }
}

/// The value of `const NAME: u32 = EXPR;` in `source`, where EXPR is integer literals and
/// earlier constants joined by `*`, `/`, `+`, `-` (evaluated left to right).
pub fn wgsl_const(source: &str, name: &str) -> Option<u32> {
    let prefix = format!("const {name}: u32 =");
    let line = source
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&prefix))?;
    let expr = line[prefix.len()..].split(';').next()?.trim();
    let mut tokens = expr.split_whitespace();
    let mut value = wgsl_operand(source, tokens.next()?)?;
    while let Some(op) = tokens.next() {
        let rhs = wgsl_operand(source, tokens.next()?)?;
        value = match op {
            "*" => value.checked_mul(rhs)?,
            "/" => value.checked_div(rhs)?,
            "+" => value.checked_add(rhs)?,
            "-" => value.checked_sub(rhs)?,
            _ => return None,
        };
    }
    Some(value)
}

fn wgsl_operand(source: &str, token: &str) -> Option<u32> {
    let t = token.trim_end_matches('u');
    if let Some(hex) = t.strip_prefix("0x") {
        return u32::from_str_radix(hex, 16).ok();
    }
    match t.parse::<u32>() {
        Ok(v) => Some(v),
        Err(_) => wgsl_const(source, token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_read_from_the_shaders() {
        let c = Consts::from_shaders().unwrap();
        assert!(c.matvec_wg.is_multiple_of(c.matvec_max_lanes));
        assert!(c.matvec_max_lanes.is_multiple_of(c.matvec_min_lanes));
        assert_eq!(
            c.topk_chunk,
            wgsl_const(TOPK.source, "TOPK_WG").unwrap()
                * wgsl_const(TOPK.source, "TOPK_PER_THREAD").unwrap()
        );
        assert!(c.att_max_hd.is_multiple_of(c.att_wg));
    }

    #[test]
    fn every_entry_point_exists_in_its_file() {
        for k in Kernel::ALL {
            let needle = format!("fn {}(", k.entry());
            assert!(
                k.file().source.contains(&needle),
                "{} lacks {needle}",
                k.file().name
            );
        }
    }
}
