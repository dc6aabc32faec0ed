//! JSON schemas of Rust types, in the form constrained decoding enforces.
//!
//! `schemars` describes a type the way serde reads it. Three of its habits
//! do not suit a strict constraint compiler, so its output is normalised:
//! - Rust-specific `format`s (`uint8`, `int64`, `double`) are dropped; the
//!   `minimum`/`maximum` beside them already carry the range. Formats the
//!   compiler knows (`date-time`, `email`, ...) are kept.
//! - `oneOf` becomes `anyOf`: every `oneOf` schemars writes is over serde
//!   enum variants, which are disjoint (distinct tags, constants or single
//!   keys), so the two accept the same values.
//! - Objects with `properties` and no `additionalProperties` get `false`:
//!   serde ignores unknown keys anyway, and a model that may add keys can
//!   spend its whole budget on them.
//!
//! Tool parameters are embedded inside a larger grammar, where a `$ref`
//! into the root's `$defs` would point elsewhere, so [`inline_refs`] expands
//! them (a recursive type is refused there).

use schemars::JsonSchema;
use serde_json::{Map, Value};

/// String formats the constraint compiler enforces.
const KNOWN_FORMATS: [&str; 8] = [
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "uuid",
    "uri",
];

/// Keywords whose value is a map of name to schema.
const SCHEMA_MAPS: [&str; 4] = ["properties", "patternProperties", "$defs", "definitions"];
/// Keywords whose value is one schema.
const SCHEMA_VALUES: [&str; 6] = [
    "items",
    "additionalProperties",
    "additionalItems",
    "not",
    "contains",
    "propertyNames",
];
/// Keywords whose value is a list of schemas.
const SCHEMA_LISTS: [&str; 4] = ["anyOf", "allOf", "oneOf", "prefixItems"];

/// The normalised schema of `T`, with its `$defs`.
pub(crate) fn schema_of<T: JsonSchema>() -> Value {
    let mut schema = schemars::schema_for!(T).to_value();
    normalise(&mut schema);
    schema
}

/// Applies the normalisation described in the module docs, in place, to
/// `schema` and every schema inside it.
pub(crate) fn normalise(schema: &mut Value) {
    let Value::Object(map) = schema else {
        return;
    };
    if map
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| !KNOWN_FORMATS.contains(&f))
    {
        map.remove("format");
    }
    if let Some(one_of) = map.remove("oneOf") {
        if map.contains_key("anyOf") {
            // Both present: keep both meanings, the second inside an allOf.
            let mut wrapped = Map::new();
            wrapped.insert("anyOf".into(), one_of);
            let all_of = map
                .entry("allOf")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(all) = all_of {
                all.push(Value::Object(wrapped));
            }
        } else {
            map.insert("anyOf".into(), one_of);
        }
    }
    if map.contains_key("properties") && !map.contains_key("additionalProperties") {
        map.insert("additionalProperties".into(), Value::Bool(false));
    }
    for_each_subschema(map, &mut normalise);
}

fn for_each_subschema(map: &mut Map<String, Value>, f: &mut dyn FnMut(&mut Value)) {
    for key in SCHEMA_MAPS {
        if let Some(Value::Object(children)) = map.get_mut(key) {
            children.values_mut().for_each(&mut *f);
        }
    }
    for key in SCHEMA_VALUES {
        if let Some(child) = map.get_mut(key) {
            f(child);
        }
    }
    for key in SCHEMA_LISTS {
        if let Some(Value::Array(children)) = map.get_mut(key) {
            children.iter_mut().for_each(&mut *f);
        }
    }
}

/// `schema` with every local `$ref` (`#/$defs/NAME`, `#/definitions/NAME`)
/// replaced by the definition it names, and the root's `$defs`,
/// `definitions` and `$schema` removed. A recursive definition or a
/// reference to something else is an error naming it.
pub(crate) fn inline_refs(schema: &Value) -> Result<Value, String> {
    let Value::Object(root) = schema else {
        return Ok(schema.clone());
    };
    let mut definitions = Map::new();
    for key in ["definitions", "$defs"] {
        if let Some(Value::Object(defs)) = root.get(key) {
            for (name, def) in defs {
                definitions.insert(format!("#/{key}/{name}"), def.clone());
            }
        }
    }
    let mut out = root.clone();
    for key in ["definitions", "$defs", "$schema"] {
        out.remove(key);
    }
    let mut out = Value::Object(out);
    expand(&mut out, &definitions, &mut Vec::new())?;
    Ok(out)
}

fn expand(
    schema: &mut Value,
    definitions: &Map<String, Value>,
    expanding: &mut Vec<String>,
) -> Result<(), String> {
    let Value::Object(map) = schema else {
        return Ok(());
    };
    if let Some(reference) = map.remove("$ref") {
        let name = reference.as_str().unwrap_or_default().to_string();
        if expanding.contains(&name) {
            return Err(format!("{name} is recursive and cannot be expanded"));
        }
        let Some(Value::Object(definition)) = definitions.get(&name) else {
            return Err(format!(
                "the reference {reference} is not a local definition"
            ));
        };
        // The reference's own keys (a description) win over the definition's.
        for (key, value) in definition {
            map.entry(key.clone()).or_insert_with(|| value.clone());
        }
        expanding.push(name);
        let result = expand(schema, definitions, expanding);
        expanding.pop();
        return result;
    }
    let mut result = Ok(());
    for_each_subschema(map, &mut |child| {
        if result.is_ok() {
            result = expand(child, definitions, expanding);
        }
    });
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[allow(dead_code)]
    #[derive(JsonSchema)]
    struct Inner {
        format: String,
        count: u8,
    }

    #[allow(dead_code)]
    #[derive(JsonSchema)]
    enum Shape {
        /// A circle.
        Circle,
        Square {
            side: f32,
        },
    }

    #[allow(dead_code)]
    #[derive(JsonSchema)]
    struct Outer {
        inner: Inner,
        maybe: Option<Inner>,
        shapes: Vec<Shape>,
    }

    fn find_key(value: &Value, key: &str) -> bool {
        match value {
            Value::Object(map) => map
                .iter()
                .any(|(k, v)| (k == key && !v.is_object()) || find_key(v, key)),
            Value::Array(items) => items.iter().any(|v| find_key(v, key)),
            _ => false,
        }
    }

    #[test]
    fn rust_formats_and_one_of_are_normalised_and_fields_named_like_keywords_survive() {
        let schema = schema_of::<Outer>();
        assert!(!find_key(&schema, "format"), "{schema:#}");
        assert!(!find_key(&schema, "oneOf"), "{schema:#}");
        let inner = &schema["$defs"]["Inner"];
        assert_eq!(inner["properties"]["format"]["type"], "string");
        assert_eq!(inner["properties"]["count"]["maximum"], 255);
        assert_eq!(inner["additionalProperties"], false);
    }

    #[test]
    fn references_are_inlined_and_recursion_is_refused() {
        let inlined = inline_refs(&schema_of::<Outer>()).unwrap();
        assert!(!inlined.to_string().contains("$ref"), "{inlined:#}");
        assert!(inlined.get("$defs").is_none());
        assert_eq!(
            inlined["properties"]["inner"]["properties"]["count"]["type"],
            "integer"
        );
        let recursive = json!({
            "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
            "$ref": "#/$defs/Node"
        });
        let error = inline_refs(&recursive).unwrap_err();
        assert!(error.contains("recursive"), "{error}");
        let foreign = json!({"$ref": "https://example.invalid/schema.json"});
        assert!(inline_refs(&foreign).is_err());
    }
}
