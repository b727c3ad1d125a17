//! mergekit's YAML (`MergeConfiguration` of mergekit 0.1.5, `mergekit/config.py`): the
//! same keys, the same parameter forms (scalars, gradients, `filter`/`value` lists) and
//! the same precedence. Unknown keys are errors that name the key and list the valid ones
//! (mergekit's pydantic models ignore some of them silently).
use crate::{Error, Result};
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One parameter's setting as written: a scalar, a gradient (a list of scalars), or
/// conditional values (`{filter, value}`, one or a list).
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    Scalar(Scalar),
    Gradient(Vec<Scalar>),
    Conditional(Vec<(Option<String>, Setting)>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Num(f64),
    Bool(bool),
    Str(String),
}

pub type Parameters = BTreeMap<String, Setting>;

/// A model reference: `path`, `path+lora` (mergekit's LoRA syntax), or `{model, lora}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelRef {
    pub model: String,
    pub lora: Option<String>,
}

impl std::fmt::Display for ModelRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.lora {
            Some(l) => write!(f, "{}+{l}", self.model),
            None => write!(f, "{}", self.model),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    model: Value,
    #[serde(default)]
    parameters: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    model: Value,
    layer_range: (usize, usize),
    #[serde(default)]
    parameters: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlice {
    sources: Vec<RawSource>,
    #[serde(default)]
    base_model: Option<Value>,
    #[serde(default)]
    parameters: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenizer {
    #[serde(default)]
    source: Option<Value>,
    #[serde(default)]
    tokens: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pad_to_multiple_of: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    merge_method: String,
    #[serde(default)]
    models: Option<Vec<RawModel>>,
    #[serde(default)]
    slices: Option<Vec<RawSlice>>,
    #[serde(default)]
    base_model: Option<Value>,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default)]
    out_dtype: Option<String>,
    #[serde(default)]
    tokenizer_source: Option<Value>,
    #[serde(default)]
    tokenizer: Option<RawTokenizer>,
    #[serde(default)]
    chat_template: Option<String>,
    #[serde(default)]
    parameters: Option<BTreeMap<String, Value>>,
}

/// An input of a slice: a model, its layers `[start, end)`, its own parameters.
#[derive(Debug, Clone)]
pub struct SliceSource {
    pub model: ModelRef,
    pub layer_range: (usize, usize),
    pub parameters: Parameters,
}

#[derive(Debug, Clone)]
pub struct Slice {
    pub sources: Vec<SliceSource>,
    pub base_model: Option<ModelRef>,
    pub parameters: Parameters,
}

/// Where the output vocabulary comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenizerSource {
    Base,
    Union,
    Model(ModelRef),
}

/// Every model input given as whole models (`models:`) or as layer slices (`slices:`).
#[derive(Debug, Clone)]
pub enum Layout {
    /// Models with their per-model parameters; layer ranges are whole models.
    Models(Vec<(ModelRef, Parameters)>),
    Slices(Vec<Slice>),
}

#[derive(Debug, Clone)]
pub struct MergeConfig {
    pub merge_method: String,
    pub layout: Layout,
    pub base_model: Option<ModelRef>,
    pub dtype: Option<String>,
    pub out_dtype: Option<String>,
    pub tokenizer_source: Option<TokenizerSource>,
    pub chat_template: Option<String>,
    pub parameters: Parameters,
    /// The YAML as read (copied into the output as `mergekit_config.yml`).
    pub text: String,
    /// The directory relative model paths are resolved against.
    pub dir: PathBuf,
}

pub const DTYPES: &[&str] = &["float32", "float16", "bfloat16", "float64"];

impl MergeConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::file(path, e.to_string()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, dir).map_err(|e| match e {
            Error::Input(m) => Error::file(path, m),
            other => other,
        })
    }

    pub fn parse(text: &str, dir: PathBuf) -> Result<Self> {
        let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| Error::Input(format!("merge config: {e}")))?;
        let layout = match (raw.models, raw.slices) {
            (Some(m), None) => Layout::Models(m.into_iter().map(|m| Ok((model_ref(&m.model)?, params(m.parameters, "models[].parameters")?))).collect::<Result<_>>()?),
            (None, Some(s)) => Layout::Slices(s.into_iter().map(slice).collect::<Result<_>>()?),
            _ => return Err(Error::Input("merge config: exactly one of 'models' or 'slices' must be present ('modules' is not supported)".into())),
        };
        for (key, d) in [("dtype", &raw.dtype), ("out_dtype", &raw.out_dtype)] {
            if let Some(d) = d {
                let d = d.strip_prefix("torch.").unwrap_or(d);
                if !DTYPES.contains(&d) {
                    return Err(Error::Input(format!("merge config: {key} {d:?}: expected one of {}", DTYPES.join(", "))));
                }
            }
        }
        if raw.tokenizer_source.is_some() && raw.tokenizer.is_some() {
            return Err(Error::Input("merge config: cannot specify both tokenizer_source and tokenizer".into()));
        }
        let tokenizer_source = match (raw.tokenizer_source, raw.tokenizer) {
            (Some(v), None) => Some(tokenizer_source(&v)?),
            (None, Some(t)) => Some(tokenizer_block(t)?),
            _ => None,
        };
        let strip = |d: Option<String>| d.map(|d| d.strip_prefix("torch.").map(str::to_string).unwrap_or(d));
        Ok(MergeConfig {
            merge_method: raw.merge_method,
            layout,
            base_model: raw.base_model.as_ref().map(model_ref).transpose()?,
            dtype: strip(raw.dtype),
            out_dtype: strip(raw.out_dtype),
            tokenizer_source,
            chat_template: raw.chat_template,
            parameters: params(raw.parameters, "parameters")?,
            text: text.to_string(),
            dir,
        })
    }

    /// Every model the config names, base first, each once.
    pub fn referenced_models(&self) -> Vec<ModelRef> {
        let mut out: Vec<ModelRef> = self.base_model.iter().cloned().collect();
        let mut add = |m: &ModelRef| {
            if !out.contains(m) {
                out.push(m.clone());
            }
        };
        match &self.layout {
            Layout::Models(ms) => ms.iter().for_each(|(m, _)| add(m)),
            Layout::Slices(ss) => ss.iter().flat_map(|s| &s.sources).for_each(|s| add(&s.model)),
        }
        if let Some(TokenizerSource::Model(m)) = &self.tokenizer_source {
            add(m);
        }
        out
    }

    /// Every parameter name written anywhere in the config, with where it was written.
    pub fn parameter_names(&self) -> Vec<(String, &'static str)> {
        let mut out: Vec<(String, &'static str)> = self.parameters.keys().map(|k| (k.clone(), "parameters")).collect();
        match &self.layout {
            Layout::Models(ms) => ms.iter().for_each(|(_, p)| out.extend(p.keys().map(|k| (k.clone(), "models[].parameters")))),
            Layout::Slices(ss) => {
                for s in ss {
                    out.extend(s.parameters.keys().map(|k| (k.clone(), "slices[].parameters")));
                    for src in &s.sources {
                        out.extend(src.parameters.keys().map(|k| (k.clone(), "slices[].sources[].parameters")));
                    }
                }
            }
        }
        out
    }
}

fn slice(s: RawSlice) -> Result<Slice> {
    if s.sources.is_empty() {
        return Err(Error::Input("merge config: a slice has no sources".into()));
    }
    let sources = s
        .sources
        .into_iter()
        .map(|src| {
            if src.layer_range.0 > src.layer_range.1 {
                return Err(Error::Input(format!("merge config: layer_range {:?}: start is after end", src.layer_range)));
            }
            Ok(SliceSource { model: model_ref(&src.model)?, layer_range: src.layer_range, parameters: params(src.parameters, "slices[].sources[].parameters")? })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Slice { sources, base_model: s.base_model.as_ref().map(model_ref).transpose()?, parameters: params(s.parameters, "slices[].parameters")? })
}

fn model_ref(v: &Value) -> Result<ModelRef> {
    match v {
        Value::String(s) => {
            let parts: Vec<&str> = s.split('+').collect();
            match parts.as_slice() {
                [m] => Ok(ModelRef { model: m.to_string(), lora: None }),
                [m, l] => Ok(ModelRef { model: m.to_string(), lora: Some(l.to_string()) }),
                _ => Err(Error::Input(format!("merge config: model {s:?}: more than one '+' (expected MODEL or MODEL+LORA)"))),
            }
        }
        Value::Mapping(m) => {
            let mut model = None;
            let mut lora = None;
            for (k, v) in m {
                match (k.as_str(), v.as_str()) {
                    (Some("model"), Some(s)) => model = Some(s.to_string()),
                    (Some("lora"), Some(s)) => lora = Some(s.to_string()),
                    (Some("lora"), None) if v.is_null() => {}
                    (k, _) => return Err(Error::Input(format!("merge config: model reference key {k:?}: expected model (a string) or lora"))),
                }
            }
            let model = model.ok_or_else(|| Error::Input("merge config: model reference without 'model'".into()))?;
            Ok(ModelRef { model, lora })
        }
        other => Err(Error::Input(format!("merge config: model reference {other:?}: expected a string or {{model, lora}}"))),
    }
}

fn tokenizer_source(v: &Value) -> Result<TokenizerSource> {
    Ok(match v.as_str() {
        Some("base") => TokenizerSource::Base,
        Some("union") => TokenizerSource::Union,
        _ => TokenizerSource::Model(model_ref(v)?),
    })
}

fn tokenizer_block(t: RawTokenizer) -> Result<TokenizerSource> {
    if t.tokens.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(Error::Input("merge config: tokenizer.tokens (per-token embedding sources) is not supported; use tokenizer.source".into()));
    }
    if t.pad_to_multiple_of.is_some() {
        return Err(Error::Input("merge config: tokenizer.pad_to_multiple_of is not supported".into()));
    }
    // mergekit's TokenizerConfig defaults `source` to "union".
    t.source.as_ref().map_or(Ok(TokenizerSource::Union), tokenizer_source)
}

fn params(p: Option<BTreeMap<String, Value>>, at: &str) -> Result<Parameters> {
    let mut out = Parameters::new();
    for (k, v) in p.unwrap_or_default() {
        out.insert(k.clone(), setting(&v).map_err(|m| Error::Input(format!("merge config: {at}.{k}: {m}")))?);
    }
    Ok(out)
}

fn scalar(v: &Value) -> Option<Scalar> {
    match v {
        Value::Bool(b) => Some(Scalar::Bool(*b)),
        Value::Number(n) => n.as_f64().map(Scalar::Num),
        Value::String(s) => Some(Scalar::Str(s.clone())),
        _ => None,
    }
}

fn setting(v: &Value) -> std::result::Result<Setting, String> {
    if let Some(s) = scalar(v) {
        return Ok(Setting::Scalar(s));
    }
    match v {
        Value::Sequence(items) if items.iter().all(|i| scalar(i).is_some()) => Ok(Setting::Gradient(items.iter().filter_map(scalar).collect())),
        Value::Sequence(items) => Ok(Setting::Conditional(items.iter().map(conditional).collect::<std::result::Result<_, _>>()?)),
        Value::Mapping(_) => Ok(Setting::Conditional(vec![conditional(v)?])),
        other => Err(format!("{other:?} is not a number, boolean, string, list or {{filter, value}}")),
    }
}

fn conditional(v: &Value) -> std::result::Result<(Option<String>, Setting), String> {
    let Value::Mapping(m) = v else { return Err(format!("{v:?}: expected {{filter, value}} in a list of conditional values")) };
    let mut filter = None;
    let mut value = None;
    for (k, v) in m {
        match k.as_str() {
            Some("filter") => filter = v.as_str().map(str::to_string),
            Some("value") => {
                let s = match v {
                    Value::Sequence(items) if items.iter().all(|i| scalar(i).is_some()) => Setting::Gradient(items.iter().filter_map(scalar).collect()),
                    other => Setting::Scalar(scalar(other).ok_or_else(|| format!("value {other:?}: expected a scalar or a list of scalars"))?),
                };
                value = Some(s);
            }
            other => return Err(format!("unknown key {other:?} in a conditional value (expected filter, value)")),
        }
    }
    Ok((filter, value.ok_or("a conditional value without 'value'")?))
}

/// The type a method declares for a parameter (pydantic's validation in mergekit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Float,
    Bool,
}

/// A resolved parameter value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamValue {
    Float(f64),
    Bool(bool),
}

fn validate(s: &Scalar, kind: Kind) -> std::result::Result<ParamValue, String> {
    match (kind, s) {
        (Kind::Float, Scalar::Num(x)) => Ok(ParamValue::Float(*x)),
        (Kind::Float, Scalar::Bool(b)) => Ok(ParamValue::Float(f64::from(u8::from(*b)))),
        (Kind::Float, Scalar::Str(t)) => t.trim().parse().map(ParamValue::Float).map_err(|_| format!("{t:?} is not a number")),
        (Kind::Bool, Scalar::Bool(b)) => Ok(ParamValue::Bool(*b)),
        (Kind::Bool, Scalar::Num(x)) if *x == 0.0 || *x == 1.0 => Ok(ParamValue::Bool(*x == 1.0)),
        (Kind::Bool, Scalar::Str(t)) => match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(ParamValue::Bool(true)),
            "false" | "no" | "off" | "0" => Ok(ParamValue::Bool(false)),
            _ => Err(format!("{t:?} is not a boolean")),
        },
        (Kind::Bool, other) => Err(format!("{other:?} is not a boolean")),
    }
}

/// mergekit's `evaluate_setting`: conditional values pick the first whose filter is
/// absent, `*`, or a substring of the tensor name; numeric gradients interpolate linearly
/// at `t` between the two nearest of their evenly spaced points; non-numeric gradients
/// pick the point at `int(t * (len - 1))`. `None` when nothing applies.
pub fn evaluate(tensor: &str, s: &Setting, t: f64, kind: Kind) -> std::result::Result<Option<ParamValue>, String> {
    match s {
        Setting::Scalar(x) => validate(x, kind).map(Some),
        Setting::Gradient(xs) if xs.is_empty() => Ok(None),
        Setting::Gradient(xs) => {
            let values = xs.iter().map(|x| validate(x, kind)).collect::<std::result::Result<Vec<_>, _>>()?;
            let numeric = kind == Kind::Float && xs.iter().all(|x| !matches!(x, Scalar::Bool(_)));
            if !numeric {
                return Ok(Some(values[(t * (values.len() - 1) as f64) as usize]));
            }
            let f = |v: &ParamValue| if let ParamValue::Float(x) = v { *x } else { 0.0 };
            let scaled = t * (values.len() - 1) as f64;
            let i0 = scaled as usize;
            let i1 = (i0 + 1).min(values.len() - 1);
            let frac = scaled - i0 as f64;
            Ok(Some(ParamValue::Float((1.0 - frac) * f(&values[i0]) + frac * f(&values[i1]))))
        }
        Setting::Conditional(conds) => {
            for (filter, value) in conds {
                let applies = match filter.as_deref() {
                    None | Some("*") => true,
                    Some(f) => !tensor.is_empty() && tensor.contains(f),
                };
                if applies {
                    return evaluate(tensor, value, t, kind);
                }
            }
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(yaml: &str) -> Setting {
        setting(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn gradients_interpolate_like_mergekit() {
        let g = s("[0, 0.5, 0.3, 0.7, 1]");
        // t = 0.3: scaled 1.2 -> 0.8 * 0.5 + 0.2 * 0.3
        let v = evaluate("x", &g, 0.3, Kind::Float).unwrap();
        assert_eq!(v, Some(ParamValue::Float(0.8 * 0.5 + 0.2 * 0.3)));
        assert_eq!(evaluate("x", &g, 1.0, Kind::Float).unwrap(), Some(ParamValue::Float(1.0)));
    }

    #[test]
    fn filters_pick_the_first_match() {
        let c = s("[{filter: self_attn, value: 0.1}, {filter: mlp, value: [0, 1]}, {value: 0.5}]");
        assert_eq!(evaluate("model.layers.3.self_attn.q_proj.weight", &c, 0.0, Kind::Float).unwrap(), Some(ParamValue::Float(0.1)));
        assert_eq!(evaluate("model.layers.3.mlp.up_proj.weight", &c, 0.5, Kind::Float).unwrap(), Some(ParamValue::Float(0.5)));
        assert_eq!(evaluate("model.norm.weight", &c, 0.0, Kind::Float).unwrap(), Some(ParamValue::Float(0.5)));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = MergeConfig::parse("merge_method: ties\nmodels: []\nbogus: 1\n", PathBuf::new()).unwrap_err().to_string();
        assert!(e.contains("bogus") && e.contains("merge_method"), "{e}");
    }
}
