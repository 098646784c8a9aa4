//! The `parameters` text of AUTOMATIC1111's web UI (also written by Forge,
//! SD.Next and many tools): the prompt, an optional `Negative prompt: ...`
//! part, then one line of `Key: value` fields separated by commas, a value
//! quoted as a JSON string when it holds a comma, colon or quote:
//!
//! ```text
//! a lighthouse on a cliff, oil painting
//! Negative prompt: blurry
//! Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x512
//! ```
//!
//! Reading follows the web UI's own parser: the last line holds the fields
//! only when it has at least three `Key: value` pairs.

/// A parsed or to-be-written `parameters` text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct A1111Params {
    /// The prompt (may span lines).
    pub prompt: String,
    /// The negative prompt, if the text has one.
    pub negative: Option<String>,
    /// The fields in order, values unquoted.
    pub fields: Vec<(String, String)>,
}

impl A1111Params {
    /// The value of field `key`, if present.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The text as the web UI writes it.
    pub fn to_text(&self) -> String {
        let mut lines = Vec::new();
        if !self.prompt.is_empty() {
            lines.push(self.prompt.clone());
        }
        if let Some(negative) = &self.negative {
            lines.push(format!("Negative prompt: {negative}"));
        }
        let fields: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("{k}: {}", quote(v)))
            .collect();
        if !fields.is_empty() {
            lines.push(fields.join(", "));
        }
        lines.join("\n")
    }

    /// Parses a `parameters` text; never fails (text without fields is all prompt).
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        let mut lines: Vec<&str> = text.split('\n').collect();
        let last = lines.pop().unwrap_or("");
        let fields = parse_fields(last);
        let fields = if fields.len() >= 3 {
            fields
        } else {
            lines.push(last);
            Vec::new()
        };
        let mut prompt = String::new();
        let mut negative: Option<String> = None;
        for (i, line) in lines.iter().enumerate() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("Negative prompt:") {
                let neg = negative.get_or_insert_with(String::new);
                if !neg.is_empty() {
                    neg.push('\n');
                }
                neg.push_str(rest.trim_start());
            } else if let Some(neg) = negative.as_mut() {
                neg.push('\n');
                neg.push_str(line);
            } else {
                if i > 0 {
                    prompt.push('\n');
                }
                prompt.push_str(line);
            }
        }
        A1111Params {
            prompt,
            negative,
            fields,
        }
    }
}

/// A value as a field: quoted as a JSON string when it would break the line apart.
fn quote(value: &str) -> String {
    if value.contains([',', ':', '\n', '"']) {
        serde_json::Value::String(value.to_string()).to_string()
    } else {
        value.to_string()
    }
}

/// The `Key: value` pairs of a fields line, as the web UI's pattern
/// `\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)` finds them; text
/// that is not a field is skipped.
fn parse_fields(line: &str) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    let mut rest = line;
    while !rest.trim().is_empty() {
        match field_at(rest) {
            Some((key, value, after)) => {
                fields.push((key, value));
                rest = after;
            }
            // Not a field here: go on after the next comma.
            None => match rest.find(',') {
                Some(comma) => rest = &rest[comma + 1..],
                None => break,
            },
        }
    }
    fields
}

/// The field at the start of `text`: key, value, and the text after its comma.
fn field_at(text: &str) -> Option<(String, String, &str)> {
    let text = text.trim_start();
    let colon = text.find(':')?;
    let key = &text[..colon];
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_alphanumeric() || c == '_');
    let key_ok = key.chars().count() >= 2
        && first_ok
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | ' ' | '-' | '/'));
    if !key_ok {
        return None;
    }
    let after_colon = text[colon + 1..].trim_start();
    if after_colon.starts_with('"') {
        if let Some((value, len)) = json_string(after_colon) {
            let after = &after_colon[len..];
            let after = after.trim_start();
            if after.is_empty() || after.starts_with(',') {
                let after = after.strip_prefix(',').unwrap_or(after);
                return Some((key.trim_end().to_string(), value, after));
            }
        }
    }
    let end = after_colon.find(',').unwrap_or(after_colon.len());
    let value = after_colon[..end].trim_end().to_string();
    let after = after_colon.get(end + 1..).unwrap_or("");
    Some((key.trim_end().to_string(), value, after))
}

/// A JSON string at the start of `text` (which starts with `"`): its value
/// and its length in bytes.
fn json_string(text: &str) -> Option<(String, usize)> {
    let mut escaped = false;
    for (i, c) in text.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => {
                let value: String = serde_json::from_str(&text[..=i]).ok()?;
                return Some((value, i + 1));
            }
            _ => {}
        }
    }
    None
}

/// The web UI's label of a sampler name (flow's or ComfyUI's); unknown names as they are.
pub fn sampler_label(name: &str) -> &str {
    SAMPLERS
        .iter()
        .find(|(_, flow)| flow.contains(&name))
        .map_or(name, |(label, _)| label)
}

/// The web UI's label of a ComfyUI scheduler name (`None` for others, such
/// as flow's diffusers-exact schedules, which the web UI has no name for).
pub fn scheduler_label(name: &str) -> Option<&'static str> {
    SCHEDULERS
        .iter()
        .find(|(_, comfy)| *comfy == name)
        .map(|(label, _)| *label)
}

/// The sampler (ComfyUI's name) and scheduler of a web UI sampler label,
/// which older versions wrote with the schedule in it (`DPM++ 2M Karras`).
pub fn sampler_from_label(label: &str) -> Option<(&'static str, Option<&'static str>)> {
    let label = label.trim();
    let (base, schedule) = match label.rsplit_once(' ') {
        Some((base, last)) if SCHEDULERS.iter().any(|(l, _)| *l == last) => {
            (base, schedule_from_label(last))
        }
        _ => (label, None),
    };
    let flow = SAMPLERS
        .iter()
        .find(|(l, _)| l.eq_ignore_ascii_case(base))?
        .1;
    // The ComfyUI name: the last of the names that share the label.
    Some((flow[flow.len() - 1], schedule))
}

/// The ComfyUI scheduler of a web UI `Schedule type` label.
pub fn schedule_from_label(label: &str) -> Option<&'static str> {
    SCHEDULERS
        .iter()
        .find(|(l, _)| l.eq_ignore_ascii_case(label.trim()))
        .map(|(_, c)| *c)
}

/// Web UI label → sampler names (flow's own, then ComfyUI's, which is the one imports use).
const SAMPLERS: &[(&str, &[&str])] = &[
    ("Euler", &["euler"]),
    ("Euler a", &["euler_a", "euler_ancestral"]),
    ("Heun", &["heun"]),
    ("DPM2", &["dpm_2"]),
    ("DPM2 a", &["dpm_2_ancestral"]),
    ("LMS", &["lms"]),
    ("DPM++ 2S a", &["dpmpp_2s_ancestral"]),
    ("DPM++ SDE", &["dpmpp_sde"]),
    ("DPM++ 2M", &["dpmpp_2m"]),
    ("DPM++ 2M SDE", &["dpmpp_2m_sde"]),
    ("DPM++ 3M SDE", &["dpmpp_3m_sde"]),
    ("DDPM", &["ddpm"]),
    ("LCM", &["lcm"]),
    ("DDIM", &["ddim"]),
    ("UniPC", &["unipc", "uni_pc"]),
];

/// Web UI `Schedule type` label → ComfyUI scheduler.
const SCHEDULERS: &[(&str, &str)] = &[
    ("Normal", "normal"),
    ("Karras", "karras"),
    ("Exponential", "exponential"),
    ("SGM Uniform", "sgm_uniform"),
    ("Simple", "simple"),
    ("DDIM", "ddim_uniform"),
    ("Beta", "beta"),
    ("KL Optimal", "kl_optimal"),
    ("Linear Quadratic", "linear_quadratic"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(p: &A1111Params) -> Vec<(&str, &str)> {
        p.fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn parses_a_web_ui_text() {
        let p = A1111Params::parse(
            "masterpiece, a lighthouse on a cliff, (oil painting:1.2)\nNegative prompt: blurry, lowres\n\
             Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234567890, \
             Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1",
        );
        assert_eq!(
            p.prompt,
            "masterpiece, a lighthouse on a cliff, (oil painting:1.2)"
        );
        assert_eq!(p.negative.as_deref(), Some("blurry, lowres"));
        assert_eq!(
            fields(&p),
            [
                ("Steps", "20"),
                ("Sampler", "DPM++ 2M"),
                ("Schedule type", "Karras"),
                ("CFG scale", "7"),
                ("Seed", "1234567890"),
                ("Size", "512x768"),
                ("Model hash", "6ce0161689"),
                ("Model", "v1-5-pruned-emaonly"),
                ("Version", "v1.10.1"),
            ]
        );
    }

    #[test]
    fn quoted_values_keep_their_commas_colons_and_quotes() {
        let p = A1111Params::parse(
            "a cat\nSteps: 30, Sampler: Euler a, CFG scale: 5.5, Seed: 7, Size: 640x640, \
             Lora hashes: \"add_detail: 7c6bad76eb54, film \\\"grain\\\": 1a2b\", \
             TI hashes: \"easynegative: c74b4e810b03\", Hires upscaler: Latent",
        );
        assert_eq!(
            p.field("Lora hashes"),
            Some("add_detail: 7c6bad76eb54, film \"grain\": 1a2b")
        );
        assert_eq!(p.field("TI hashes"), Some("easynegative: c74b4e810b03"));
        assert_eq!(p.field("Hires upscaler"), Some("Latent"));
        assert_eq!(p.negative, None);
    }

    #[test]
    fn multi_line_prompts_and_missing_parts() {
        let p = A1111Params::parse(
            "line one\nline two\nNegative prompt: bad\nworse\nSteps: 4, Seed: 1, Size: 8x8",
        );
        assert_eq!(p.prompt, "line one\nline two");
        assert_eq!(p.negative.as_deref(), Some("bad\nworse"));
        assert_eq!(p.field("Steps"), Some("4"));
        // Fewer than three fields: the last line is prompt.
        let p = A1111Params::parse("just a prompt\nSteps: 4, Seed: 1");
        assert_eq!(p.prompt, "just a prompt\nSteps: 4, Seed: 1");
        assert!(p.fields.is_empty());
        // No prompt at all, and junk between fields.
        let p = A1111Params::parse("Steps: 4, ???, Seed: 1, Size: 8x8, : x");
        assert_eq!(p.prompt, "");
        assert_eq!(fields(&p), [("Steps", "4"), ("Seed", "1"), ("Size", "8x8")]);
        assert_eq!(A1111Params::parse(""), A1111Params::default());
    }

    #[test]
    fn writing_then_reading_gives_the_same_fields() {
        let p = A1111Params {
            prompt: "a \"quoted\" prompt, with commas".into(),
            negative: Some("".into()),
            fields: vec![
                ("Steps".into(), "20".into()),
                ("Sampler".into(), "Euler a".into()),
                ("Model".into(), "tiny:sd".into()),
                ("Graph".into(), "a, b".into()),
            ],
        };
        let text = p.to_text();
        assert_eq!(
            text,
            "a \"quoted\" prompt, with commas\nNegative prompt: \nSteps: 20, Sampler: Euler a, Model: \"tiny:sd\", Graph: \"a, b\""
        );
        assert_eq!(A1111Params::parse(&text), p);
    }

    #[test]
    fn sampler_names_map_both_ways() {
        assert_eq!(sampler_label("euler_a"), "Euler a");
        assert_eq!(sampler_label("euler_ancestral"), "Euler a");
        assert_eq!(sampler_label("dpmpp_2m"), "DPM++ 2M");
        assert_eq!(sampler_label("my_sampler"), "my_sampler");
        assert_eq!(scheduler_label("karras"), Some("Karras"));
        assert_eq!(scheduler_label("diffusers"), None);
        assert_eq!(
            sampler_from_label("Euler a"),
            Some(("euler_ancestral", None))
        );
        assert_eq!(
            sampler_from_label("DPM++ 2M Karras"),
            Some(("dpmpp_2m", Some("karras")))
        );
        assert_eq!(
            sampler_from_label("DPM++ 2M SDE Exponential"),
            Some(("dpmpp_2m_sde", Some("exponential")))
        );
        assert_eq!(sampler_from_label("UniPC"), Some(("uni_pc", None)));
        assert_eq!(sampler_from_label("DDIM"), Some(("ddim", None)));
        assert_eq!(sampler_from_label("Restart"), None);
        assert_eq!(schedule_from_label("SGM Uniform"), Some("sgm_uniform"));
    }
}
