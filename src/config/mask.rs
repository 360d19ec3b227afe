//! The effective configuration as TOML for `edgewatt config check`, secrets masked.

use super::Config;

/// What a secret is replaced with.
pub const MASK: &str = "********";

pub(super) fn to_masked_toml(config: &Config) -> String {
    let mut c = config.clone();
    if c.mqtt.password.is_some() {
        c.mqtt.password = Some(MASK.into());
    }
    // Validation rejects credentials in the URL, but `config check` also prints
    // configs that failed validation's later rules: never echo a password.
    if let Some((scheme, rest)) = c.mqtt.url.split_once("://") {
        if let Some((userinfo, host)) = rest.rsplit_once('@') {
            let user = userinfo.split(':').next().unwrap_or("");
            c.mqtt.url = format!("{scheme}://{user}:{MASK}@{host}");
        }
    }
    let mut value = match toml::Value::try_from(&c) {
        Ok(v) => v,
        Err(e) => return format!("# cannot render the configuration as TOML: {e}\n"),
    };
    shorten_floats(&mut value);
    toml::to_string_pretty(&value)
        .unwrap_or_else(|e| format!("# cannot render the configuration as TOML: {e}\n"))
}

/// f32 options widen to f64 on the way to TOML (`0.95` would print as
/// `0.949999988079071`); print the shortest decimal that reads back to the same f32.
fn shorten_floats(v: &mut toml::Value) {
    match v {
        toml::Value::Float(f) => {
            let narrow = *f as f32;
            if f64::from(narrow) == *f {
                if let Ok(short) = narrow.to_string().parse::<f64>() {
                    *f = short;
                }
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(shorten_floats),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| shorten_floats(v)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_masked() {
        let mut c = Config::default();
        c.mqtt.password = Some("hunter2".into());
        c.mqtt.username = Some("board".into());
        let t = c.to_masked_toml();
        assert!(!t.contains("hunter2"), "{t}");
        assert!(t.contains("password = \"********\""), "{t}");
        assert!(t.contains("username = \"board\""), "{t}");
    }

    #[test]
    fn url_credentials_masked() {
        let mut c = Config::default();
        c.mqtt.url = "mqtt://u:hunter2@broker:1883".into();
        let t = c.to_masked_toml();
        assert!(!t.contains("hunter2"), "{t}");
        assert!(t.contains("mqtt://u:********@broker:1883"), "{t}");
    }

    #[test]
    fn floats_read_as_written() {
        let t = Config::default().to_masked_toml();
        assert!(t.contains("top_p = 0.95"), "{t}");
        assert!(t.contains("min_p = 0.05"), "{t}");
    }

    #[test]
    fn round_trips_through_the_loader() {
        let c = Config::default();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, c.to_masked_toml()).unwrap();
        let back = crate::config::load_from(Some(&p), &[]).unwrap();
        assert_eq!(back, c);
    }
}
