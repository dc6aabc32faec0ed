//! Chat templates: Hugging Face rendering semantics and error handling.

use anyhow::{Context, Result};
use hearth_models::ModelError;
use hearth_models::chat_template::{ChatMessage, ChatTemplate};

use crate::support::open_model;

const SMOLLM_SYSTEM: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n";

fn smollm_template() -> Result<ChatTemplate> {
    ChatTemplate::from_gguf(&open_model("smollm2-135m-instruct")?)?
        .context("SmolLM2 has a chat template")
}

#[test]
fn smollm2_renders_default_system_prompt_and_generation_prompt() -> Result<()> {
    let template = smollm_template()?;
    let rendered = template.render(&[ChatMessage::new("user", "Hi")], true)?;
    assert_eq!(
        rendered,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    Ok(())
}

#[test]
fn smollm2_keeps_a_given_system_prompt() -> Result<()> {
    let template = smollm_template()?;
    let messages = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi"),
        ChatMessage::new("assistant", "Hello!"),
    ];
    let rendered = template.render(&messages, false)?;
    assert_eq!(
        rendered,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
    );
    assert!(!rendered.contains(SMOLLM_SYSTEM));
    Ok(())
}

#[test]
fn gemma3_base_has_no_template() -> Result<()> {
    assert!(ChatTemplate::from_gguf(&open_model("gemma3-270m")?)?.is_none());
    Ok(())
}

/// Gemma's instruction-tuned template (abridged): system text is folded
/// into the first user turn, roles must alternate, content is stripped.
const GEMMA_STYLE: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'].strip() }}
    {%- else -%}
        {{ message['content'] | trim }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"#;

#[test]
fn gemma_style_template_with_raise_exception() -> Result<()> {
    let template = ChatTemplate::new(GEMMA_STYLE, "<bos>", "<eos>")?;
    let messages = [
        ChatMessage::new("system", "Sys."),
        ChatMessage::new("user", "  Hello  "),
    ];
    assert_eq!(
        template.render(&messages, true)?,
        "<bos><start_of_turn>user\nSys.\n\nHello<end_of_turn>\n<start_of_turn>model\n"
    );
    let bad = [ChatMessage::new("assistant", "first")];
    match template.render(&bad, true) {
        Err(ModelError::Template(message)) => {
            assert!(message.contains("roles must alternate"), "{message}")
        }
        other => panic!("expected a template error, got {other:?}"),
    }
    Ok(())
}

#[test]
fn python_string_methods_work() -> Result<()> {
    let source = "{% for m in messages %}{% if m.content.startswith('/') %}cmd:{{ m.content[1:].strip().upper() }}\
                  {% else %}{{ m['content'].split(' ') | length }}{% endif %}|{% endfor %}";
    let template = ChatTemplate::new(source, "", "")?;
    let messages = [
        ChatMessage::new("user", "/ run "),
        ChatMessage::new("user", "a b c"),
    ];
    assert_eq!(template.render(&messages, false)?, "cmd:RUN|3|");
    Ok(())
}

#[test]
fn trim_and_lstrip_blocks_are_on() -> Result<()> {
    let source = "{% for m in messages %}\n    {% if true %}\n[{{ m.role }}]\n    {% endif %}\n{% endfor %}\n";
    let template = ChatTemplate::new(source, "", "")?;
    assert_eq!(
        template.render(&[ChatMessage::new("user", "x")], false)?,
        "[user]\n"
    );
    Ok(())
}

#[test]
fn tojson_writes_like_python() -> Result<()> {
    let source = "{{ messages[0] | tojson }} {{ [1, 2.5, none, true, 'é\"\n'] | tojson }} {{ {'b': 1} | tojson(indent=2) }}";
    let template = ChatTemplate::new(source, "", "")?;
    assert_eq!(
        template.render(&[ChatMessage::new("user", "<hi>")], false)?,
        "{\"role\": \"user\", \"content\": \"<hi>\"} [1, 2.5, null, true, \"é\\\"\\n\"] {\n  \"b\": 1\n}"
    );
    Ok(())
}

#[test]
fn malformed_templates_are_errors() {
    for source in [
        "{% for m in messages %}",
        "{{ messages[0 }}",
        "{% endif %}",
        "{{ 'a' }",
        "{% if %}",
    ] {
        assert!(
            matches!(
                ChatTemplate::new(source, "", ""),
                Err(ModelError::Template(_))
            ),
            "{source}"
        );
    }
}

#[test]
fn runtime_errors_are_errors() -> Result<()> {
    let template = ChatTemplate::new("{{ messages[0].content + 1 }}", "", "")?;
    assert!(matches!(
        template.render(&[ChatMessage::new("user", "x")], false),
        Err(ModelError::Template(_))
    ));
    let template = ChatTemplate::new("{{ messages[5].content.strip() }}", "", "")?;
    assert!(template.render(&[], false).is_err());
    let template = ChatTemplate::new("{{ 'x' | no_such_filter }}", "", "")?;
    assert!(matches!(
        template.render(&[], false),
        Err(ModelError::Template(_))
    ));
    Ok(())
}
