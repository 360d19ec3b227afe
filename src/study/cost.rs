//! Cost per million generated tokens: from energy alone and with the board's price
//! amortized over its busy hours, beside a cloud price to compare with; and the
//! energy-delay product. Pure functions over a plan's `[cost]` table.

use serde::{Deserialize, Serialize};

/// Joules in a kilowatt-hour.
pub const J_PER_KWH: f64 = 3.6e6;

/// The plan's `[cost]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostConfig {
    /// Electricity price per kWh, in `currency`.
    pub energy_price_per_kwh: f64,
    /// Currency label (e.g. "EUR"); shown, never converted.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// What the board cost, in `currency` (amortized cost needs it with `board_lifetime_h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_price: Option<f64>,
    /// Hours the board is expected to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_lifetime_h: Option<f64>,
    /// Fraction of its lifetime the board is generating (0 < u ≤ 1; default 1).
    #[serde(default = "default_utilization")]
    pub utilization: f64,
    /// A cloud API's price per million generated tokens, to compare with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_price_per_mtok: Option<f64>,
}

fn default_currency() -> String {
    "USD".into()
}

fn default_utilization() -> f64 {
    1.0
}

/// Cost errors (a `[cost]` value out of range).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CostError {
    #[error("cost.{key} is '{value}'; it must be {allowed}")]
    OutOfRange {
        key: &'static str,
        value: f64,
        allowed: &'static str,
    },
}

impl CostConfig {
    /// Checks every value's range (a plan error names the key and the value).
    pub fn validate(&self) -> Result<(), CostError> {
        let bad = |key, value: f64, allowed| CostError::OutOfRange {
            key,
            value,
            allowed,
        };
        if !(self.energy_price_per_kwh.is_finite() && self.energy_price_per_kwh >= 0.0) {
            return Err(bad(
                "energy_price_per_kwh",
                self.energy_price_per_kwh,
                "a finite number >= 0",
            ));
        }
        if !(self.utilization > 0.0 && self.utilization <= 1.0) {
            return Err(bad("utilization", self.utilization, "in (0, 1]"));
        }
        for (key, v) in [
            ("board_price", self.board_price),
            ("cloud_price_per_mtok", self.cloud_price_per_mtok),
        ] {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                return Err(bad(key, v, "a finite number >= 0"));
            }
        }
        if let Some(h) = self
            .board_lifetime_h
            .filter(|h| !(h.is_finite() && *h > 0.0))
        {
            return Err(bad("board_lifetime_h", h, "a finite number > 0"));
        }
        Ok(())
    }
}

/// Cost per million generated tokens of one configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    pub currency: String,
    /// Electricity alone: J/token × 10⁶ ÷ 3.6·10⁶ J/kWh × price.
    pub energy_per_mtok: f64,
    /// The board's share: price ÷ (lifetime_h · 3600 · utilization) per busy second ×
    /// s/token × 10⁶ (`None` without board price and lifetime).
    pub board_per_mtok: Option<f64>,
    /// energy + board (`None` without the board's share).
    pub total_per_mtok: Option<f64>,
    /// The plan's cloud price, for comparison.
    pub cloud_per_mtok: Option<f64>,
    /// total (or energy alone, without a board price) ÷ cloud; < 1 = cheaper than cloud.
    pub vs_cloud: Option<f64>,
}

/// Cost of generating at `j_per_token` joules and `s_per_token` seconds per
/// generated token (the e2e figures: prefill + decode over generated tokens).
pub fn cost_per_mtok(cfg: &CostConfig, j_per_token: f64, s_per_token: f64) -> Cost {
    let energy = j_per_token * 1e6 / J_PER_KWH * cfg.energy_price_per_kwh;
    let board = match (cfg.board_price, cfg.board_lifetime_h) {
        (Some(price), Some(h)) if h > 0.0 && cfg.utilization > 0.0 => {
            Some(price / (h * 3600.0 * cfg.utilization) * s_per_token * 1e6)
        }
        _ => None,
    };
    let total = board.map(|b| b + energy);
    let vs_cloud = cfg
        .cloud_price_per_mtok
        .filter(|c| *c > 0.0)
        .map(|c| total.unwrap_or(energy) / c);
    Cost {
        currency: cfg.currency.clone(),
        energy_per_mtok: energy,
        board_per_mtok: board,
        total_per_mtok: total,
        cloud_per_mtok: cfg.cloud_price_per_mtok,
        vs_cloud,
    }
}

/// Energy-delay product, J·s per token²: J/token × s/token (lower is better; it
/// penalises saving energy by running slowly).
pub fn edp(j_per_token: f64, s_per_token: f64) -> f64 {
    j_per_token * s_per_token
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CostConfig {
        CostConfig {
            energy_price_per_kwh: 0.30,
            currency: "EUR".into(),
            board_price: Some(80.0),
            board_lifetime_h: Some(20_000.0),
            utilization: 0.5,
            cloud_price_per_mtok: Some(0.60),
        }
    }

    #[test]
    fn cost_from_energy_and_board() {
        // 0.1 J/token → 10⁵ J per Mtok = 1/36 kWh → 0.30/36 EUR.
        // Board: 80 / (20000 h · 3600 · 0.5) = 2.2̅·10⁻⁶ EUR/s; at 0.02 s/token
        // that is 2.2̅·10⁻⁶ · 2·10⁴ s = 0.0444̅ EUR per Mtok.
        let c = cost_per_mtok(&cfg(), 0.1, 0.02);
        assert!((c.energy_per_mtok - 0.30 / 36.0).abs() < 1e-15);
        let board = 80.0 / (20_000.0 * 3600.0 * 0.5) * 0.02 * 1e6;
        assert!((c.board_per_mtok.unwrap() - board).abs() < 1e-15);
        assert!((board - 0.044444444444).abs() < 1e-9);
        assert!((c.total_per_mtok.unwrap() - (board + 0.30 / 36.0)).abs() < 1e-15);
        assert!((c.vs_cloud.unwrap() - (board + 0.30 / 36.0) / 0.6).abs() < 1e-15);
        assert_eq!(c.currency, "EUR");
    }

    #[test]
    fn without_board_price_only_energy() {
        let mut k = cfg();
        k.board_price = None;
        let c = cost_per_mtok(&k, 0.1, 0.02);
        assert_eq!((c.board_per_mtok, c.total_per_mtok), (None, None));
        assert!((c.vs_cloud.unwrap() - (0.30 / 36.0) / 0.6).abs() < 1e-15);
    }

    #[test]
    fn edp_is_the_product() {
        assert_eq!(edp(0.5, 0.04), 0.02);
    }

    #[test]
    fn validation_names_key_and_value() {
        let mut k = cfg();
        k.utilization = 1.5;
        let e = k.validate().unwrap_err().to_string();
        assert_eq!(e, "cost.utilization is '1.5'; it must be in (0, 1]");
        let mut k = cfg();
        k.board_lifetime_h = Some(0.0);
        assert!(k
            .validate()
            .unwrap_err()
            .to_string()
            .contains("board_lifetime_h"));
        assert!(cfg().validate().is_ok());
        let parsed: CostConfig =
            toml::from_str("energy_price_per_kwh = 0.3\ncurrency = 'EUR'").unwrap();
        assert_eq!((parsed.utilization, parsed.board_price), (1.0, None));
    }
}
