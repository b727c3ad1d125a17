//! Chat templates: the model's own Jinja template rendered with minijinja,
//! configured like transformers' `apply_chat_template` (trim_blocks, lstrip_blocks).
use crate::{Error, Result};
use minijinja::{Environment, ErrorKind, Value};

const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const LLAMA3: &str = "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
const GEMMA: &str = "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}{% if role == 'system' %}{{ '<start_of_turn>user\\n' + message['content'] | trim + '\\n\\n' }}{% else %}{% if not (loop.index0 == 1 and messages[0]['role'] == 'system') %}{{ '<start_of_turn>' + role + '\\n' }}{% endif %}{{ message['content'] | trim + '<end_of_turn>\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}";
/// Messages' contents as they are, then EOS: raw text for language-model tuning.
const PLAIN: &str = "{% for message in messages %}{{ message['content'] }}{% endfor %}{% if not add_generation_prompt %}{{ eos_token }}{% endif %}";
const ALPACA: &str = "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}{% elif message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}";

/// Template source for a builtin name or a file path.
pub fn named(name: &str) -> Result<String> {
    Ok(match name {
        "chatml" => CHATML.into(),
        "llama3" => LLAMA3.into(),
        "gemma" => GEMMA.into(),
        "alpaca" => ALPACA.into(),
        "plain" => PLAIN.into(),
        path => std::fs::read_to_string(path).map_err(|e| Error::Template(format!("{path:?} is neither a builtin template (chatml, llama3, gemma, alpaca, plain) nor a readable file: {e}")))?,
    })
}

pub struct ChatTemplate {
    /// The Jinja source (part of cache keys).
    pub source: String,
    env: Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    pub fn new(source: &str, bos: String, eos: String) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<Value, minijinja::Error> { Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg)) });
        env.add_function("strftime_now", |fmt: String| -> String { strftime_now(&fmt) });
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string()).map_err(|e| Error::Template(e.to_string()))?;
        Ok(ChatTemplate { source: source.to_string(), env, bos, eos })
    }

    /// Render `messages` (OpenAI-style objects: role, content, optional tool_calls ...).
    pub fn render(&self, messages: &[serde_json::Value], add_generation_prompt: bool, tools: Option<&serde_json::Value>) -> Result<String> {
        let tmpl = self.env.get_template("chat").map_err(|e| Error::Template(e.to_string()))?;
        let ctx = minijinja::context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            tools => tools.map(Value::from_serialize),
            bos_token => &self.bos,
            eos_token => &self.eos,
        };
        tmpl.render(ctx).map_err(|e| Error::Template(describe(&e)))
    }
}

/// transformers' `tojson`: Python's `json.dumps(x, ensure_ascii=False, indent=indent)`,
/// keys in insertion order, no HTML escaping (minijinja's builtin sorts keys, is compact
/// and escapes HTML, so tool schemas would render differently from the reference).
fn tojson(v: Value, kwargs: minijinja::value::Kwargs) -> std::result::Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&v).map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    let mut out = String::new();
    py_dumps(&json, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn py_dumps(v: &serde_json::Value, indent: Option<usize>, depth: usize, out: &mut String) {
    use serde_json::Value as J;
    let (open_sep, item_sep, close_sep) = match indent {
        Some(n) => (format!("\n{}", " ".repeat(n * (depth + 1))), format!(",\n{}", " ".repeat(n * (depth + 1))), format!("\n{}", " ".repeat(n * depth))),
        None => (String::new(), ", ".to_string(), String::new()),
    };
    match v {
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            out.push_str(&open_sep);
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&item_sep);
                }
                py_dumps(x, indent, depth + 1, out);
            }
            out.push_str(&close_sep);
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            out.push('{');
            out.push_str(&open_sep);
            for (i, (k, x)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(&item_sep);
                }
                out.push_str(&serde_json::to_string(k).expect("string"));
                out.push_str(": ");
                py_dumps(x, indent, depth + 1, out);
            }
            out.push_str(&close_sep);
            out.push('}');
        }
        other => out.push_str(&serde_json::to_string(other).expect("json")),
    }
}

fn describe(e: &minijinja::Error) -> String {
    let mut s = e.to_string();
    if let Some(line) = e.line() {
        s.push_str(&format!(" (template line {line})"));
    }
    s
}

/// `strftime_now` as chat templates use it (dates in system prompts): UTC, common codes only.
fn strftime_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let days = secs.div_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    fmt.replace("%Y", &y.to_string()).replace("%m", &format!("{m:02}")).replace("%d", &format!("{d:02}")).replace("%B", MONTHS[(m - 1) as usize]).replace("%b", &MONTHS[(m - 1) as usize][..3])
}
