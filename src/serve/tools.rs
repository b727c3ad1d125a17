//! Tool calling. Tools go to the model through its chat template when the template
//! knows them (Qwen2.5's does); other templates get them in a system message in the same
//! Hermes/Qwen format. Calls come back as `<tool_call>{"name", "arguments"}</tool_call>`
//! blocks in the generated text, parsed into OpenAI's `tool_calls`.
use super::openai::{type_name, ApiError};
use regex::Regex;
use serde_json::{json, Value};
use std::sync::OnceLock;

pub const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// What the request asked of tools.
#[derive(Debug, Clone, Default)]
pub struct ToolSpec {
    pub tools: Vec<Value>,
    /// Text the assistant turn is made to start with: `<tool_call>` for "required", and
    /// the name too for a named function.
    pub forced: String,
    /// Parse calls out of the output (tools given and tool_choice is not "none").
    pub parse: bool,
}

pub fn read(tools: Option<&Value>, choice: Option<&Value>) -> Result<ToolSpec, ApiError> {
    let tools = match tools {
        None => return Ok(ToolSpec::default()),
        Some(Value::Array(a)) => a.clone(),
        Some(v) => return Err(ApiError::invalid("tools", format!("'tools' must be an array, not {}", type_name(v)))),
    };
    for (i, t) in tools.iter().enumerate() {
        if t["type"] != "function" || !t["function"]["name"].is_string() {
            return Err(ApiError::invalid(&format!("tools[{i}]"), format!("tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ..., \"parameters\": ...}}}}")));
        }
    }
    let names: Vec<&str> = tools.iter().filter_map(|t| t["function"]["name"].as_str()).collect();
    let (forced, parse) = match choice {
        None if tools.is_empty() => (String::new(), false),
        None => (String::new(), true),
        Some(Value::String(s)) if s == "auto" => (String::new(), !tools.is_empty()),
        Some(Value::String(s)) if s == "none" => (String::new(), false),
        Some(Value::String(s)) if s == "required" => (format!("{OPEN}\n"), true),
        Some(Value::Object(o)) if o.get("function").and_then(|f| f["name"].as_str()).is_some() => {
            let name = o["function"]["name"].as_str().expect("checked");
            if !names.contains(&name) {
                return Err(ApiError::invalid("tool_choice", format!("tool_choice names {name:?}, which is not in 'tools' ({})", names.join(", "))));
            }
            (format!("{OPEN}\n{{\"name\": {}, \"arguments\": ", json!(name)), true)
        }
        Some(v) => {
            return Err(ApiError::invalid("tool_choice", format!("'tool_choice' must be \"none\", \"auto\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}, not {v}")))
        }
    };
    if parse && tools.is_empty() {
        return Err(ApiError::invalid("tool_choice", "tool_choice asks for a tool call but 'tools' is empty"));
    }
    Ok(ToolSpec { tools: if parse { tools } else { vec![] }, forced, parse })
}

/// Messages ready for a template: assistant tool-call arguments as objects (templates
/// render them with `tojson`), and for templates that do not know tools, the tools in a
/// system message and tool turns in plain text.
pub fn prepare(messages: Vec<Value>, spec: &ToolSpec, template_knows_tools: bool) -> Vec<Value> {
    let mut out: Vec<Value> = messages.into_iter().map(arguments_as_objects).collect();
    if template_knows_tools {
        return out;
    }
    out = out.into_iter().map(plain_tool_turns).collect();
    if spec.tools.is_empty() {
        return out;
    }
    let list: Vec<String> = spec.tools.iter().map(|t| t.to_string()).collect();
    let text = format!(
        "You may call one or more functions to assist with the user query. You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call>",
        list.join("\n")
    );
    match out.first_mut() {
        Some(m) if m["role"] == "system" => {
            let c = m["content"].as_str().unwrap_or("").to_string();
            m["content"] = json!(format!("{c}\n\n{text}"));
        }
        _ => out.insert(0, json!({"role": "system", "content": text})),
    }
    out
}

fn arguments_as_objects(mut m: Value) -> Value {
    if let Some(calls) = m.get_mut("tool_calls").and_then(Value::as_array_mut) {
        for c in calls {
            if let Some(a) = c["function"]["arguments"].as_str().and_then(|s| serde_json::from_str::<Value>(s).ok()) {
                c["function"]["arguments"] = a;
            }
        }
    }
    m
}

fn plain_tool_turns(m: Value) -> Value {
    if m["role"] == "tool" {
        return json!({"role": "user", "content": format!("<tool_response>\n{}\n</tool_response>", m["content"].as_str().unwrap_or(""))});
    }
    if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
        let mut text = m["content"].as_str().unwrap_or("").to_string();
        for c in calls {
            let call = json!({"name": c["function"]["name"], "arguments": c["function"]["arguments"]});
            text.push_str(&format!("{OPEN}\n{call}\n{CLOSE}"));
        }
        return json!({"role": "assistant", "content": text});
    }
    m
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// A JSON string, as OpenAI sends it.
    pub arguments: String,
}

impl ToolCall {
    pub fn json(&self, index: Option<usize>) -> Value {
        let mut v = json!({"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}});
        if let Some(i) = index {
            v["index"] = json!(i);
        }
        v
    }
}

fn call_from(v: &Value) -> Option<ToolCall> {
    let name = v["name"].as_str()?;
    let arguments = match &v["arguments"] {
        Value::String(s) => s.clone(),
        Value::Null => "{}".to_string(),
        a => a.to_string(),
    };
    Some(ToolCall { id: format!("call_{:024x}", rand::random::<u128>() >> 32), name: name.to_string(), arguments })
}

/// Split generated text into content and tool calls: `<tool_call>` blocks, or (small
/// models often drop the markers) a whole output that is a JSON call, or a list of
/// them, naming one of `tools`. When any block fails to parse, nothing is a call.
pub fn parse(text: &str, tools: &[Value]) -> (Option<String>, Vec<ToolCall>) {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"(?s)<tool_call>\s*(.*?)\s*(?:</tool_call>|$)").expect("regex"));
    let mut calls = vec![];
    for cap in re.captures_iter(text) {
        match serde_json::from_str::<Value>(&cap[1]).ok().as_ref().and_then(call_from) {
            Some(c) => calls.push(c),
            None => return (Some(text.to_string()), vec![]),
        }
    }
    if calls.is_empty() {
        let known = |c: &ToolCall| tools.iter().any(|t| t["function"]["name"] == c.name.as_str());
        let bare: Vec<ToolCall> = match serde_json::from_str::<Value>(text.trim()) {
            Ok(Value::Array(a)) => a.iter().filter_map(call_from).collect(),
            Ok(v @ Value::Object(_)) => call_from(&v).into_iter().collect(),
            _ => vec![],
        };
        if !bare.is_empty() && bare.iter().all(known) {
            return (None, bare);
        }
        return (Some(text.to_string()), vec![]);
    }
    let content = re.replace_all(text, "").trim().to_string();
    (if content.is_empty() { None } else { Some(content) }, calls)
}

/// How much of `text` can be streamed as content while tool calls are being parsed:
/// everything before a `<tool_call>` (or before a suffix that may start one).
pub fn streamable(text: &str) -> usize {
    // An output that starts like JSON may be a call without markers: wait for the end.
    if text.trim_start().is_empty() || text.trim_start().starts_with(['{', '[']) {
        return 0;
    }
    if let Some(i) = text.find(OPEN) {
        return i;
    }
    for k in (1..OPEN.len()).rev() {
        if text.ends_with(&OPEN[..k]) {
            return text.len() - k;
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qwen_calls_and_keeps_bad_ones_as_text() {
        let tools = [json!({"type": "function", "function": {"name": "get_weather"}})];
        let (c, calls) = parse("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>", &tools);
        assert_eq!(c, None);
        assert_eq!(calls[0].name, "get_weather");
        assert_eq!(calls[0].arguments, "{\"city\":\"Paris\"}");
        let (c, calls) = parse("Sure. <tool_call>{not json}</tool_call>", &tools);
        assert!(calls.is_empty());
        assert_eq!(c.as_deref(), Some("Sure. <tool_call>{not json}</tool_call>"));
        // An unterminated call at the end of the output still counts.
        assert_eq!(parse("<tool_call>{\"name\": \"f\", \"arguments\": {}}", &tools).1.len(), 1);
        // Without markers: only a call to a known tool counts.
        assert_eq!(parse(" {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}", &tools).1.len(), 1);
        assert!(parse("{\"name\": \"other\", \"arguments\": {}}", &tools).1.is_empty());
        assert_eq!(streamable("Hello <tool"), 6);
        assert_eq!(streamable("Hi <tool_call>{"), 3);
        assert_eq!(streamable("Hi"), 2);
    }

    #[test]
    fn tool_choice_forms() {
        let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
        assert!(read(Some(&tools), None).unwrap().parse);
        assert!(!read(Some(&tools), Some(&json!("none"))).unwrap().parse);
        assert_eq!(read(Some(&tools), Some(&json!("required"))).unwrap().forced, "<tool_call>\n");
        assert!(read(Some(&tools), Some(&json!({"type": "function", "function": {"name": "g"}}))).is_err());
        assert!(read(Some(&json!("x")), None).is_err());
    }
}
