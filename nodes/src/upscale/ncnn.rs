//! Parser for ncnn model files: the text `.param` graph and the `.bin`
//! weight blob that goes with it.
//!
//! `.param`: the magic `7767517`, then `layer_count blob_count`, then one line
//! per layer: `Type Name bottom_count top_count bottoms... tops... k=v...`.
//! A value is an int, or a float when it contains `.` or an exponent; a key
//! `-233NN=count,v1,v2,...` is the array parameter `NN`.
//!
//! `.bin`: the weights of every layer in `.param` order, without framing. A
//! layer reads either raw f32 values or a "tagged" blob whose 4-byte tag says
//! how the data is stored (`0x01306B47`: f16; `0`: f32).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

/// The magic number on the first line of every `.param` file.
const PARAM_MAGIC: &str = "7767517";
/// Tag of an f16 weight blob in `.bin` files.
const TAG_F16: u32 = 0x0130_6B47;
/// Array parameters are written with the key `-23300 - id`.
const ARRAY_KEY_BASE: i32 = -23300;

/// A scalar parameter value as written in the file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    /// Written without `.` or exponent.
    Int(i32),
    /// Written with `.` or an exponent.
    Float(f32),
}

impl Num {
    fn parse(text: &str) -> Result<Num> {
        if text.contains(['.', 'e', 'E']) {
            let f = text
                .parse::<f32>()
                .with_context(|| format!("`{text}` is not a number"))?;
            Ok(Num::Float(f))
        } else {
            let i = text
                .parse::<i32>()
                .with_context(|| format!("`{text}` is not an integer"))?;
            Ok(Num::Int(i))
        }
    }

    fn as_f32(self) -> f32 {
        match self {
            Num::Int(i) => i as f32,
            Num::Float(f) => f,
        }
    }
}

/// One parameter of a layer.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue {
    /// `id=value`.
    Scalar(Num),
    /// `-233NN=count,values...`.
    Array(Vec<Num>),
}

/// The parameters of a layer by id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamDict(BTreeMap<i32, ParamValue>);

impl ParamDict {
    /// The integer parameter `id`, or `default` when absent.
    pub fn int(&self, id: i32, default: i32) -> Result<i32> {
        match self.0.get(&id) {
            None => Ok(default),
            Some(ParamValue::Scalar(Num::Int(i))) => Ok(*i),
            Some(other) => bail!("parameter {id} should be an integer, got {other:?}"),
        }
    }

    /// A non-negative integer parameter.
    pub fn usize(&self, id: i32, default: usize) -> Result<usize> {
        let default = i32::try_from(default).context("default out of range")?;
        let v = self.int(id, default)?;
        usize::try_from(v)
            .with_context(|| format!("parameter {id} should not be negative, got {v}"))
    }

    /// The float parameter `id` (an int is widened), or `default` when absent.
    pub fn float(&self, id: i32, default: f32) -> Result<f32> {
        match self.0.get(&id) {
            None => Ok(default),
            Some(ParamValue::Scalar(n)) => Ok(n.as_f32()),
            Some(other) => bail!("parameter {id} should be a number, got {other:?}"),
        }
    }

    /// The array parameter `id` as floats; empty when absent.
    pub fn floats(&self, id: i32) -> Result<Vec<f32>> {
        match self.0.get(&id) {
            None => Ok(Vec::new()),
            Some(ParamValue::Array(items)) => Ok(items.iter().map(|n| n.as_f32()).collect()),
            Some(other) => bail!("parameter {id} should be an array, got {other:?}"),
        }
    }

    /// True if parameter `id` is given.
    pub fn contains(&self, id: i32) -> bool {
        self.0.contains_key(&id)
    }

    fn parse_entry(&mut self, entry: &str) -> Result<()> {
        let (key, value) = entry
            .split_once('=')
            .with_context(|| format!("`{entry}` is not `key=value`"))?;
        let key = key
            .parse::<i32>()
            .with_context(|| format!("bad parameter key `{key}`"))?;
        if key <= ARRAY_KEY_BASE {
            let id = ARRAY_KEY_BASE - key;
            let mut parts = value.split(',');
            let count = parts.next().unwrap_or_default();
            let count = count
                .parse::<usize>()
                .with_context(|| format!("array parameter {id}: bad count `{count}`"))?;
            let items = parts.map(Num::parse).collect::<Result<Vec<_>>>()?;
            if items.len() != count {
                bail!(
                    "array parameter {id} declares {count} values but has {}",
                    items.len()
                );
            }
            self.0.insert(id, ParamValue::Array(items));
        } else {
            self.0.insert(key, ParamValue::Scalar(Num::parse(value)?));
        }
        Ok(())
    }
}

/// One layer line of a `.param` file.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerDecl {
    /// Layer type, e.g. `Convolution`.
    pub kind: String,
    /// Layer name, unique in the file.
    pub name: String,
    /// Names of the blobs it reads.
    pub inputs: Vec<String>,
    /// Names of the blobs it writes.
    pub outputs: Vec<String>,
    /// Its parameters.
    pub params: ParamDict,
}

/// Parses the text of a `.param` file.
pub fn parse_param(text: &str) -> Result<Vec<LayerDecl>> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, magic) = lines.next().context("empty .param file")?;
    if magic.trim() != PARAM_MAGIC {
        bail!(
            "not an ncnn .param file: first line is `{}`, expected {PARAM_MAGIC}",
            magic.trim()
        );
    }
    let (_, counts) = lines
        .next()
        .context(".param file ends after the magic number")?;
    let counts: Vec<usize> = counts
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("line 2 should be `layer_count blob_count`, got `{counts}`"))?;
    let [layer_count, _blob_count] = counts[..] else {
        bail!("line 2 should be `layer_count blob_count`, got {counts:?}");
    };
    let layers = lines
        .map(|(i, line)| parse_layer(line).with_context(|| format!(".param line {}", i + 1)))
        .collect::<Result<Vec<_>>>()?;
    if layers.len() != layer_count {
        bail!(
            ".param declares {layer_count} layers but lists {}",
            layers.len()
        );
    }
    Ok(layers)
}

fn parse_layer(line: &str) -> Result<LayerDecl> {
    let mut tokens = line.split_whitespace();
    let mut next = |what: &str| tokens.next().with_context(|| format!("missing {what}"));
    let kind = next("layer type")?.to_string();
    let name = next("layer name")?.to_string();
    let n_in: usize = next("input count")?.parse().context("bad input count")?;
    let n_out: usize = next("output count")?.parse().context("bad output count")?;
    let inputs = (0..n_in)
        .map(|_| next("input blob").map(str::to_string))
        .collect::<Result<_>>()?;
    let outputs = (0..n_out)
        .map(|_| next("output blob").map(str::to_string))
        .collect::<Result<_>>()?;
    let mut params = ParamDict::default();
    for entry in tokens {
        params
            .parse_entry(entry)
            .with_context(|| format!("layer `{name}`"))?;
    }
    Ok(LayerDecl {
        kind,
        name,
        inputs,
        outputs,
        params,
    })
}

/// Reads the weights of a `.bin` file in order.
pub struct WeightReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> WeightReader<'a> {
    /// A reader at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        WeightReader { data, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .with_context(|| {
                format!(
                    ".bin file too short: need {n} bytes at offset {}, file has {}",
                    self.pos,
                    self.data.len()
                )
            })?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    /// `n` raw little-endian f32 values (biases, PReLU slopes).
    pub fn raw_f32(&mut self, n: usize) -> Result<Vec<f32>> {
        let bytes = self.take(n.checked_mul(4).context("weight size overflows")?)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// `n` values of a tagged blob (convolution weights): f16 or f32 data.
    pub fn tagged(&mut self, n: usize) -> Result<Vec<f32>> {
        let tag_bytes = self.take(4)?;
        let tag = u32::from_le_bytes([tag_bytes[0], tag_bytes[1], tag_bytes[2], tag_bytes[3]]);
        match tag {
            TAG_F16 => {
                let len = n.checked_mul(2).context("weight size overflows")?;
                let bytes = self.take(len.next_multiple_of(4))?;
                Ok(bytes[..len]
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect())
            }
            0 => self.raw_f32(n),
            other => bail!(
                "weight blob at offset {} has storage tag {other:#010x}; only f16 ({TAG_F16:#010x}) and f32 (0) are supported",
                self.pos - 4
            ),
        }
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<()> {
        if self.pos != self.data.len() {
            bail!(
                ".bin file has {} bytes left over after the last layer (read {} of {}): it does not match the .param file",
                self.data.len() - self.pos,
                self.pos,
                self.data.len()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_layers_with_scalar_and_array_params() {
        let text = "7767517\n2 3\nInput in 0 1 data\n\
                    Convolution conv 1 1 data out 0=32 1=3 4=1 5=1 6=864 9=2 -23310=1,2.000000e-01\n";
        let layers = parse_param(text).unwrap();
        assert_eq!(layers.len(), 2);
        let conv = &layers[1];
        assert_eq!(conv.kind, "Convolution");
        assert_eq!(conv.inputs, ["data"]);
        assert_eq!(conv.outputs, ["out"]);
        assert_eq!(conv.params.int(0, 0).unwrap(), 32);
        assert_eq!(conv.params.int(11, -1).unwrap(), -1);
        assert_eq!(conv.params.floats(10).unwrap(), [0.2f32]);
        assert!(conv.params.float(9, 0.0).is_ok());
        assert!(conv.params.int(10, 0).is_err());
    }

    #[test]
    fn rejects_bad_headers_and_counts() {
        assert!(parse_param("123\n0 0\n")
            .unwrap_err()
            .to_string()
            .contains("7767517"));
        let err = parse_param("7767517\n2 1\nInput in 0 1 data\n").unwrap_err();
        assert!(err.to_string().contains("2 layers"), "{err}");
        let err = parse_param("7767517\n1 1\nInput in 0 1 data -23310=2,1.0\n").unwrap_err();
        assert!(format!("{err:#}").contains("declares 2 values"), "{err:#}");
    }

    #[test]
    fn reads_f16_and_f32_blobs() {
        let mut bin = Vec::new();
        bin.extend(TAG_F16.to_le_bytes());
        for v in [1.5f32, -2.0, 0.25] {
            bin.extend(half::f16::from_f32(v).to_le_bytes());
        }
        bin.extend([0, 0]); // f16 data is padded to 4 bytes
        bin.extend(0u32.to_le_bytes());
        bin.extend(3.0f32.to_le_bytes());
        bin.extend(7.0f32.to_le_bytes());
        let mut r = WeightReader::new(&bin);
        assert_eq!(r.tagged(3).unwrap(), [1.5, -2.0, 0.25]);
        assert_eq!(r.tagged(1).unwrap(), [3.0]);
        assert!(r.finish().is_err());
        assert_eq!(r.raw_f32(1).unwrap(), [7.0]);
        r.finish().unwrap();
        assert!(r.raw_f32(1).is_err());
    }

    #[test]
    fn rejects_quantized_blobs() {
        let bin = 0x000D_4B38u32.to_le_bytes();
        let err = WeightReader::new(&bin).tagged(1).unwrap_err();
        assert!(err.to_string().contains("storage tag"), "{err}");
    }
}
