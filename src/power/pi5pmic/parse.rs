//! Parser for `vcgencmd pmic_read_adc` (the Raspberry Pi 5 PMIC's ADC, through the
//! firmware): 12 `NAME_A current(N)=X.XXXXXXXXA` lines, then 14 `NAME_V
//! volt(N)=X.XXXXXXXXV` lines, names right-aligned with leading spaces. The channel
//! numbers are not in rail order, so current and voltage are paired by rail name;
//! `EXT5V_V` and `BATT_V` are voltages only. Over the mailbox the reply is one
//! NUL-terminated string (lines may also be NUL-separated); an `error=N
//! error_msg="…"` reply is the firmware refusing the command.

use std::collections::BTreeMap;

/// The PMIC's rails that have a current and a voltage channel, in board order.
pub const PMIC_RAILS: [&str; 12] = [
    "3V7_WL_SW",
    "3V3_SYS",
    "1V8_SYS",
    "DDR_VDD2",
    "DDR_VDDQ",
    "1V1_SYS",
    "0V8_SW",
    "VDD_CORE",
    "0V8_AON",
    "3V3_DAC",
    "3V3_ADC",
    "HDMI",
];

/// A reply that is not a PMIC reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The firmware answered with an error.
    #[error("firmware refused 'pmic_read_adc': '{0}'")]
    Refused(String),
    /// A line is not `NAME_A current(N)=XA` / `NAME_V volt(N)=XV`.
    #[error("unexpected line '{0}' in the pmic_read_adc reply: expected 'NAME_A current(N)=X.XA' or 'NAME_V volt(N)=X.XV'")]
    Line(String),
    /// No rail had both a current and a voltage.
    #[error("pmic_read_adc reply holds no rail with both current and voltage ({0} lines)")]
    Empty(usize),
}

/// One rail's reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RailReading {
    /// Voltage, µV.
    pub voltage_uv: i64,
    /// Current, µA.
    pub current_ua: i64,
}

impl RailReading {
    /// V × I, µW.
    pub fn power_uw(&self) -> i64 {
        (i128::from(self.voltage_uv) * i128::from(self.current_ua) / 1_000_000) as i64
    }
}

/// A parsed `pmic_read_adc` reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PmicReading {
    /// Rails with both a current and a voltage, by name.
    pub rails: BTreeMap<String, RailReading>,
    /// `EXT5V_V`: the 5 V input's voltage, µV.
    pub ext5v_uv: Option<i64>,
    /// `BATT_V`: the RTC battery's voltage, µV (absent on some firmware).
    pub batt_uv: Option<i64>,
}

impl PmicReading {
    /// Σ V × I over the rails, µW: the SoC and memory rails, not the board's input.
    pub fn total_uw(&self) -> i64 {
        self.rails.values().map(RailReading::power_uw).sum()
    }
}

/// `X.XXXXXXXX` in micro-units, exactly (no float rounding), e.g. `12.5` → 12_500_000.
fn parse_micro(text: &str) -> Option<i64> {
    let (neg, t) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: i64 = int.parse::<i64>().ok()?.checked_mul(1_000_000)?;
    let digits: Vec<u8> = frac.bytes().collect();
    let mut scale = 100_000;
    for &d in digits.iter().take(6) {
        v += i64::from(d - b'0') * scale;
        scale /= 10;
    }
    // Round half up on the 7th digit.
    if digits.get(6).is_some_and(|&d| d >= b'5') {
        v += 1;
    }
    Some(if neg { -v } else { v })
}

/// One line: (rail, is_current, value in µA or µV).
fn parse_line(line: &str) -> Option<(String, bool, i64)> {
    let (lhs, value) = line.split_once('=')?;
    let (name, kind) = lhs.trim().split_once(' ')?;
    let (is_current, unit, suffix) = if kind.starts_with("current(") {
        (true, 'A', "_A")
    } else if kind.starts_with("volt(") {
        (false, 'V', "_V")
    } else {
        return None;
    };
    let channel = kind.split_once('(')?.1.strip_suffix(')')?;
    channel.parse::<u32>().ok()?;
    let rail = name.strip_suffix(suffix)?;
    let v = parse_micro(value.trim().strip_suffix(unit)?)?;
    Some((rail.to_string(), is_current, v))
}

/// Parses a reply (newline- or NUL-separated lines).
pub fn parse(reply: &str) -> Result<PmicReading, ParseError> {
    let lines: Vec<&str> = reply
        .split(['\n', '\0'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(l) = lines.iter().find(|l| l.starts_with("error=")) {
        return Err(ParseError::Refused(l.to_string()));
    }
    let mut currents = BTreeMap::new();
    let mut volts = BTreeMap::new();
    for l in &lines {
        let (rail, is_current, v) = parse_line(l).ok_or_else(|| ParseError::Line(l.to_string()))?;
        if is_current {
            currents.insert(rail, v);
        } else {
            volts.insert(rail, v);
        }
    }
    let mut out = PmicReading {
        ext5v_uv: volts.get("EXT5V").copied(),
        batt_uv: volts.get("BATT").copied(),
        ..Default::default()
    };
    for (rail, current_ua) in currents {
        if let Some(&voltage_uv) = volts.get(&rail) {
            out.rails.insert(
                rail,
                RailReading {
                    voltage_uv,
                    current_ua,
                },
            );
        }
    }
    if out.rails.is_empty() {
        return Err(ParseError::Empty(lines.len()));
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod captures {
    /// An idle Pi 5 (firmware 2024-11), as `vcgencmd pmic_read_adc` prints it.
    pub const IDLE: &str = "     3V7_WL_SW_A current(0)=0.00390372A
       3V3_SYS_A current(1)=0.05562801A
       1V8_SYS_A current(2)=0.17272240A
      DDR_VDD2_A current(3)=0.02049453A
      DDR_VDDQ_A current(4)=0.00000000A
       1V1_SYS_A current(5)=0.18348880A
        0V8_SW_A current(6)=0.30156360A
      VDD_CORE_A current(7)=0.68300000A
       3V3_DAC_A current(17)=0.00048840A
       3V3_ADC_A current(18)=0.00030528A
       0V8_AON_A current(16)=0.00000000A
          HDMI_A current(22)=0.02115060A
     3V7_WL_SW_V volt(8)=3.71721600V
       3V3_SYS_V volt(9)=3.31047600V
       1V8_SYS_V volt(10)=1.79926400V
      DDR_VDD2_V volt(11)=1.11133200V
      DDR_VDDQ_V volt(12)=0.60668400V
       1V1_SYS_V volt(13)=1.10891200V
        0V8_SW_V volt(14)=0.80305200V
      VDD_CORE_V volt(15)=0.88000000V
       3V3_DAC_V volt(20)=3.30816000V
       3V3_ADC_V volt(21)=3.30036000V
       0V8_AON_V volt(19)=0.80183200V
          HDMI_V volt(23)=5.17296000V
         EXT5V_V volt(24)=5.15016000V
          BATT_V volt(25)=0.00000000V
";

    /// A busy Pi 5 (all four cores loaded): VDD_CORE carries a two-digit current.
    pub const BUSY: &str = "     3V7_WL_SW_A current(0)=0.00878337A
       3V3_SYS_A current(1)=0.06197211A
       1V8_SYS_A current(2)=0.21468240A
      DDR_VDD2_A current(3)=0.10440550A
      DDR_VDDQ_A current(4)=0.00195186A
       1V1_SYS_A current(5)=0.26328780A
        0V8_SW_A current(6)=0.32522450A
      VDD_CORE_A current(7)=10.27340000A
       3V3_DAC_A current(17)=0.00061050A
       3V3_ADC_A current(18)=0.00036634A
       0V8_AON_A current(16)=0.00512433A
          HDMI_A current(22)=0.02237160A
     3V7_WL_SW_V volt(8)=3.71428800V
       3V3_SYS_V volt(9)=3.30828000V
       1V8_SYS_V volt(10)=1.79755600V
      DDR_VDD2_V volt(11)=1.10840400V
      DDR_VDDQ_V volt(12)=0.60497600V
       1V1_SYS_V volt(13)=1.10695000V
        0V8_SW_V volt(14)=0.80158800V
      VDD_CORE_V volt(15)=0.90950000V
       3V3_DAC_V volt(20)=3.30938400V
       3V3_ADC_V volt(21)=3.30402000V
       0V8_AON_V volt(19)=0.79972800V
          HDMI_V volt(23)=5.12808000V
         EXT5V_V volt(24)=5.09730000V
          BATT_V volt(25)=0.00488400V
";
}

#[cfg(test)]
mod tests {
    use super::captures::{BUSY, IDLE};
    use super::*;

    #[test]
    fn idle_board_pairs_by_name() {
        let r = parse(IDLE).expect("parse");
        assert_eq!(r.rails.len(), 12);
        for name in PMIC_RAILS {
            assert!(r.rails.contains_key(name), "{name}");
        }
        assert_eq!(
            r.rails["VDD_CORE"],
            RailReading {
                voltage_uv: 880_000,
                current_ua: 683_000
            }
        );
        // 3V3_DAC: current channel 17, voltage channel 20: paired by name.
        assert_eq!(r.rails["3V3_DAC"].voltage_uv, 3_308_160);
        assert_eq!(r.rails["3V3_DAC"].current_ua, 488);
        // A zero rail is a reading of zero, not a missing rail.
        assert_eq!(r.rails["DDR_VDDQ"].current_ua, 0);
        assert_eq!(r.rails["DDR_VDDQ"].power_uw(), 0);
        assert_eq!(r.ext5v_uv, Some(5_150_160));
        assert_eq!(r.batt_uv, Some(0));
        assert!(!r.rails.contains_key("EXT5V") && !r.rails.contains_key("BATT"));
        // Σ V×I ≈ 1.69 W at idle (VDD_CORE 0.60 W of it).
        let total = r.total_uw();
        assert_eq!(total, 1_690_932);
        assert_eq!(r.rails["VDD_CORE"].power_uw(), 601_040);
    }

    #[test]
    fn busy_board_two_digit_current() {
        let r = parse(BUSY).expect("parse");
        assert_eq!(r.rails["VDD_CORE"].current_ua, 10_273_400);
        assert_eq!(r.rails["VDD_CORE"].power_uw(), 9_343_657);
        assert!(r.total_uw() > 10_000_000);
        assert_eq!(r.batt_uv, Some(4_884));
    }

    #[test]
    fn battery_line_absent() {
        let text: String = IDLE
            .lines()
            .filter(|l| !l.contains("BATT_V"))
            .map(|l| format!("{l}\n"))
            .collect();
        let r = parse(&text).expect("parse");
        assert_eq!(r.batt_uv, None);
        assert_eq!(r.rails.len(), 12);
    }

    #[test]
    fn nul_separated_reply() {
        let text = IDLE.replace('\n', "\0") + "\0\0\0";
        assert_eq!(parse(&text).expect("parse"), parse(IDLE).expect("parse"));
    }

    #[test]
    fn garbage_and_error_replies() {
        assert_eq!(
            parse("error=1 error_msg=\"Command not registered\""),
            Err(ParseError::Refused(
                "error=1 error_msg=\"Command not registered\"".into()
            ))
        );
        let e = parse("     VDD_CORE_A current(7)=0.68300000A\nhello world\n").unwrap_err();
        assert_eq!(e, ParseError::Line("hello world".into()));
        assert!(e.to_string().contains("'hello world'"));
        assert!(matches!(
            parse("VDD_CORE_A current(7)=0.6x3A"),
            Err(ParseError::Line(_))
        ));
        // Currents without voltages pair to nothing.
        assert_eq!(
            parse("VDD_CORE_A current(7)=0.683A\n"),
            Err(ParseError::Empty(1))
        );
        assert_eq!(parse(""), Err(ParseError::Empty(0)));
    }

    #[test]
    fn micro_units_exactly() {
        assert_eq!(parse_micro("0.00390372"), Some(3_904));
        assert_eq!(parse_micro("12"), Some(12_000_000));
        assert_eq!(parse_micro("5.15016000"), Some(5_150_160));
        assert_eq!(parse_micro("-0.5"), Some(-500_000));
        assert_eq!(parse_micro("x"), None);
        assert_eq!(parse_micro(".5"), None);
    }
}
