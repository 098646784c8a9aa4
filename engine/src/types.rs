//! The types that flow values and ports carry, and which port accepts which value.

use std::fmt;
use std::str::FromStr;

/// The type of a port or of a value.
///
/// Tensor-like types (`tensor`, `latent`, `image`, `embeddings`) are all accepted
/// where a `tensor` is expected; an `int` is accepted where a `float` is; `json`
/// accepts any plain data (text, numbers, bools, lists, maps); `any` accepts
/// everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ValueType {
    /// Accepts every value.
    Any,
    /// UTF-8 text (also used for paths).
    Text,
    /// 64-bit signed integer.
    Int,
    /// 64-bit float.
    Float,
    /// Boolean.
    Bool,
    /// A list of values.
    List,
    /// A map from text keys to values.
    Map,
    /// Any plain data: text, numbers, bools, lists and maps.
    Json,
    /// A candle tensor.
    Tensor,
    /// An image: f32 tensor `[N, C, H, W]` with values in `[0, 1]`.
    Image,
    /// A diffusion latent: f32 tensor `[N, C, H, W]`.
    Latent,
    /// Text embeddings: f32 tensor `[N, D]`.
    Embeddings,
    /// Prompt conditioning for a diffusion model.
    Cond,
    /// A reference to a model (resolved by the model store).
    Model,
    /// A collection of loaded documents.
    Docs,
    /// A collection of text chunks with their sources.
    Chunks,
    /// A vector index over embeddings.
    Index,
}

impl ValueType {
    /// Every type, in the order `flow ops` documents them.
    pub const ALL: [ValueType; 17] = [
        ValueType::Any,
        ValueType::Text,
        ValueType::Int,
        ValueType::Float,
        ValueType::Bool,
        ValueType::List,
        ValueType::Map,
        ValueType::Json,
        ValueType::Tensor,
        ValueType::Image,
        ValueType::Latent,
        ValueType::Embeddings,
        ValueType::Cond,
        ValueType::Model,
        ValueType::Docs,
        ValueType::Chunks,
        ValueType::Index,
    ];

    /// The name used in graph files, `flow ops` and script port declarations.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Any => "any",
            ValueType::Text => "text",
            ValueType::Int => "int",
            ValueType::Float => "float",
            ValueType::Bool => "bool",
            ValueType::List => "list",
            ValueType::Map => "map",
            ValueType::Json => "json",
            ValueType::Tensor => "tensor",
            ValueType::Image => "image",
            ValueType::Latent => "latent",
            ValueType::Embeddings => "embeddings",
            ValueType::Cond => "cond",
            ValueType::Model => "model",
            ValueType::Docs => "docs",
            ValueType::Chunks => "chunks",
            ValueType::Index => "index",
        }
    }

    /// True for the types whose values are candle tensors.
    pub fn is_tensor_like(self) -> bool {
        matches!(
            self,
            ValueType::Tensor | ValueType::Image | ValueType::Latent | ValueType::Embeddings
        )
    }

    /// True for plain data (what `json` accepts).
    pub fn is_plain(self) -> bool {
        matches!(
            self,
            ValueType::Text
                | ValueType::Int
                | ValueType::Float
                | ValueType::Bool
                | ValueType::List
                | ValueType::Map
                | ValueType::Json
        )
    }

    /// Whether a port of type `self` accepts a value of type `given`.
    pub fn accepts(self, given: ValueType) -> bool {
        if self == given || self == ValueType::Any || given == ValueType::Any {
            return true;
        }
        match self {
            ValueType::Float => given == ValueType::Int,
            ValueType::Tensor => given.is_tensor_like(),
            ValueType::Json => given.is_plain(),
            // A `json` output may hold anything plain; it is checked again at run time.
            ValueType::Text
            | ValueType::Int
            | ValueType::Bool
            | ValueType::List
            | ValueType::Map => given == ValueType::Json,
            _ => false,
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ValueType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ValueType::ALL
            .iter()
            .copied()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown type `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_ports_accept_tensor_like_values() {
        assert!(ValueType::Tensor.accepts(ValueType::Latent));
        assert!(ValueType::Tensor.accepts(ValueType::Image));
        assert!(!ValueType::Latent.accepts(ValueType::Image));
        assert!(!ValueType::Text.accepts(ValueType::Tensor));
    }

    #[test]
    fn numbers_widen_to_float_only() {
        assert!(ValueType::Float.accepts(ValueType::Int));
        assert!(!ValueType::Int.accepts(ValueType::Float));
    }

    #[test]
    fn names_round_trip() {
        for t in ValueType::ALL {
            assert_eq!(t.name().parse::<ValueType>().unwrap(), t);
        }
    }
}
