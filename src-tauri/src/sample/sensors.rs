//! Temperatures, fans and batteries: Linux's `/sys/class/hwmon` and
//! `/sys/class/power_supply`.
//!
//! hwmon is read directly rather than through sysinfo's components: sysinfo reads the
//! same files for temperatures but has no fans, and one reader for both costs one walk.
//! The parsers are pure functions over the files' text ([`hwmon_chip`],
//! [`power_supply`]), tested on fixture trees and fuzzed; [`read_hwmon`] and
//! [`read_power_supplies`] only list the directories and read the small files. On other
//! OSes temperatures come from sysinfo's components ([`portable_temperatures`]); fans
//! and batteries stay absent there.
//!
//! Cost: a few dozen small sysfs files per chip, so they are read every
//! [`SENSORS_EVERY`], not each tick (temperatures move over seconds, not milliseconds),
//! and carried over between readings.

use std::path::Path;
use std::time::Duration;

use crate::model::{BatterySample, FanSample, TemperatureSample};

/// How often sensors and batteries are read again.
pub const SENSORS_EVERY: Duration = Duration::from_secs(10);

/// Most sensors, fans or batteries kept.
pub const MAX_SENSORS: usize = 256;

/// Longest file read from sysfs (a sensor file holds one number).
const MAX_FILE_BYTES: u64 = 4096;

/// The temperatures and fans of one hwmon chip, from its directory's files given as
/// (file name, content) pairs. `name` is the chip's `name` file. A sensor is
/// `tempN_input` (millidegrees Celsius) with the optional `tempN_label`, `tempN_max`
/// and `tempN_crit`; a fan is `fanN_input` (RPM) with `fanN_label`. Values that do not
/// parse, and temperatures outside -100..=250 °C (a disconnected probe reads -128 or
/// 255), are left out. Sorted by sensor number.
pub fn hwmon_chip(name: &str, files: &[(String, String)]) -> (Vec<TemperatureSample>, Vec<FanSample>) {
    let get = |file: String| files.iter().find(|(f, _)| *f == file).map(|(_, v)| v.trim());
    let milli = |file: String| get(file).and_then(|v| v.parse::<i64>().ok()).map(|v| v as f64 / 1000.0);
    let chip = clean(name);
    let label = |kind: &str, n: u32| {
        let own = get(format!("{kind}{n}_label")).map(clean).filter(|l| !l.is_empty());
        let label = own.unwrap_or_else(|| format!("{kind}{n}"));
        if chip.is_empty() { label } else { format!("{chip} {label}") }
    };
    let numbers = |kind: &str| {
        let mut n: Vec<u32> =
            files.iter().filter_map(|(f, _)| f.strip_prefix(kind)?.strip_suffix("_input")?.parse().ok()).collect();
        n.sort_unstable();
        n.dedup();
        n
    };
    let plausible = |c: f64| (-100.0..=250.0).contains(&c);
    let temperatures = numbers("temp")
        .into_iter()
        .filter_map(|n| {
            let celsius = milli(format!("temp{n}_input")).filter(|c| plausible(*c))?;
            Some(TemperatureSample {
                name: label("temp", n),
                celsius,
                high_celsius: milli(format!("temp{n}_max")).filter(|c| plausible(*c) && *c > 0.0),
                critical_celsius: milli(format!("temp{n}_crit")).filter(|c| plausible(*c) && *c > 0.0),
            })
        })
        .take(MAX_SENSORS)
        .collect();
    let fans = numbers("fan")
        .into_iter()
        .filter_map(|n| {
            let rpm = get(format!("fan{n}_input"))?.parse::<u32>().ok()?;
            Some(FanSample { name: label("fan", n), rpm: f64::from(rpm) })
        })
        .take(MAX_SENSORS)
        .collect();
    (temperatures, fans)
}

/// A battery from its `uevent` file (`POWER_SUPPLY_KEY=value` lines), or `None` when
/// the supply is not a battery (mains adapters, USB ports) or is not present.
/// Charge is `CAPACITY` where given, else `ENERGY_NOW / ENERGY_FULL` (or the `CHARGE_`
/// pair); power is `POWER_NOW` (µW), else `CURRENT_NOW × VOLTAGE_NOW` (µA, µV).
pub fn power_supply(name: &str, uevent: &str) -> Option<BatterySample> {
    let get = |key: &str| {
        uevent
            .lines()
            .find_map(|l| l.strip_prefix("POWER_SUPPLY_")?.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
    };
    let num = |key: &str| get(key).and_then(|v| v.parse::<f64>().ok()).filter(|v| v.is_finite());
    if get("TYPE")? != "Battery" || get("PRESENT") == Some("0") {
        return None;
    }
    let ratio = |now: &str, full: &str| match (num(now), num(full)) {
        (Some(n), Some(f)) if f > 0.0 => Some(n * 100.0 / f),
        _ => None,
    };
    let percent = num("CAPACITY")
        .or_else(|| ratio("ENERGY_NOW", "ENERGY_FULL"))
        .or_else(|| ratio("CHARGE_NOW", "CHARGE_FULL"))
        .map(|p| p.clamp(0.0, 100.0));
    let status = match get("STATUS").unwrap_or("Unknown") {
        "Charging" => "charging",
        "Discharging" => "discharging",
        "Full" => "full",
        "Not charging" => "not charging",
        _ => "unknown",
    };
    let power = num("POWER_NOW")
        .map(|uw| uw / 1e6)
        .or_else(|| Some(num("CURRENT_NOW")? * num("VOLTAGE_NOW")? / 1e12))
        .map(f64::abs)
        .filter(|w| *w < 10_000.0);
    Some(BatterySample { name: clean(name), percent, status: status.to_owned(), power_watts: power })
}

/// Text from sysfs made fit to show: control characters dropped, at most 64 characters.
fn clean(s: &str) -> String {
    s.trim().chars().filter(|c| !c.is_control()).take(64).collect()
}

/// The small files of a directory that `wanted` picks by name, as (name, content)
/// pairs; subdirectories and files that cannot be read (some need root) skipped.
fn small_files(dir: &Path, wanted: impl Fn(&str) -> bool) -> Vec<(String, String)> {
    use std::io::Read;
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !wanted(&name) {
                return None;
            }
            let mut text = String::new();
            std::fs::File::open(e.path()).ok()?.take(MAX_FILE_BYTES).read_to_string(&mut text).ok()?;
            Some((name, text))
        })
        .collect()
}

/// Every hwmon chip under `root` (`/sys/class/hwmon`), in name order. `None` when
/// `root` cannot be listed (no sysfs); empty when there are no chips.
pub fn read_hwmon(root: &Path) -> Option<(Vec<TemperatureSample>, Vec<FanSample>)> {
    let mut dirs: Vec<_> = std::fs::read_dir(root).ok()?.flatten().map(|e| e.path()).collect();
    dirs.sort();
    let (mut temperatures, mut fans) = (Vec::new(), Vec::new());
    for dir in dirs {
        // Only the files a chip's sensors live in: hwmon directories also link to the
        // device, whose other files are none of ours.
        let files = small_files(&dir, |f| f == "name" || f.starts_with("temp") || f.starts_with("fan"));
        let name = files.iter().find(|(f, _)| f == "name").map(|(_, v)| v.clone()).unwrap_or_default();
        let (t, f) = hwmon_chip(&name, &files);
        temperatures.extend(t);
        fans.extend(f);
    }
    temperatures.truncate(MAX_SENSORS);
    fans.truncate(MAX_SENSORS);
    Some((temperatures, fans))
}

/// Every battery under `root` (`/sys/class/power_supply`). `None` when `root` cannot be
/// listed; empty when there is no battery.
pub fn read_power_supplies(root: &Path) -> Option<Vec<BatterySample>> {
    let mut dirs: Vec<_> = std::fs::read_dir(root).ok()?.flatten().map(|e| e.path()).collect();
    dirs.sort();
    Some(
        dirs.iter()
            .filter_map(|dir| {
                let name = dir.file_name()?.to_string_lossy().into_owned();
                let uevent = std::fs::read_to_string(dir.join("uevent")).ok()?;
                power_supply(&name, &uevent)
            })
            .take(MAX_SENSORS)
            .collect(),
    )
}

/// Temperatures through sysinfo's components, on the OSes without a reader of their
/// own (sysinfo has no fans). sysinfo's `max` is the highest reading it has seen, not a
/// level the chip names, so only the critical level is kept.
#[cfg(any(not(target_os = "linux"), test))]
pub(super) fn portable_temperatures(components: &mut sysinfo::Components) -> Vec<TemperatureSample> {
    components.refresh(true);
    components
        .iter()
        .filter_map(|c| {
            let celsius = f64::from(c.temperature()?);
            (-100.0..=250.0).contains(&celsius).then(|| TemperatureSample {
                name: clean(c.label()),
                celsius,
                high_celsius: None,
                critical_celsius: c.critical().map(f64::from).filter(|v| v.is_finite() && *v > 0.0),
            })
        })
        .take(MAX_SENSORS)
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fixture(part: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/host/sys/class").join(part)
    }

    #[test]
    fn hwmon_chips_give_labelled_temperatures_and_fans() {
        let (t, f) = read_hwmon(&fixture("hwmon")).unwrap();
        let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["coretemp Package id 0", "coretemp Core 0", "nvme Composite", "nct6775 temp1"]);
        assert_eq!(t[0].celsius, 54.0);
        assert_eq!((t[0].high_celsius, t[0].critical_celsius), (Some(84.0), Some(100.0)));
        assert_eq!(t[2].celsius, 38.85);
        // The probe that reads -128 (disconnected) is left out.
        assert!(t.iter().all(|t| t.celsius > -100.0));
        let fans: Vec<(&str, f64)> = f.iter().map(|f| (f.name.as_str(), f.rpm)).collect();
        assert_eq!(fans, [("nct6775 CPU fan", 1180.0), ("nct6775 fan2", 0.0)]);
        assert_eq!(read_hwmon(&fixture("nothing-here")), None);
    }

    #[test]
    fn batteries_come_from_uevent_and_adapters_are_not_batteries() {
        let b = read_power_supplies(&fixture("power_supply")).unwrap();
        assert_eq!(b.len(), 2, "{b:?}");
        assert_eq!(b[0].name, "BAT0");
        assert_eq!(b[0].percent, Some(87.0));
        assert_eq!(b[0].status, "discharging");
        assert!((b[0].power_watts.unwrap() - 9.874).abs() < 1e-9);
        // No CAPACITY: from the charge pair; power from current and voltage.
        assert_eq!(b[1].name, "BAT1");
        assert_eq!(b[1].percent, Some(50.0));
        assert_eq!(b[1].status, "charging");
        assert!((b[1].power_watts.unwrap() - 12.0).abs() < 1e-9);
    }

    /// The general reading (sysinfo's components, used on other OSes) reads without
    /// failing here, and finds no sensor where hwmon has none (most virtual machines).
    #[cfg(target_os = "linux")]
    #[test]
    fn sysinfo_finds_no_sensor_where_hwmon_has_none() {
        let ours = read_hwmon(Path::new("/sys/class/hwmon")).map_or(0, |(t, _)| t.len());
        let mut components = sysinfo::Components::new_with_refreshed_list().unwrap();
        let general = portable_temperatures(&mut components);
        if ours == 0 {
            assert!(general.is_empty(), "{general:?}");
        }
    }

    #[test]
    fn odd_values_are_left_out() {
        let files = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
        };
        let (t, f) =
            hwmon_chip("x", &files(&[("temp1_input", "abc"), ("temp2_input", "255000"), ("fan1_input", "-5")]));
        assert!(t.is_empty() && f.is_empty());
        assert_eq!(power_supply("AC", "POWER_SUPPLY_TYPE=Mains\nPOWER_SUPPLY_ONLINE=1\n"), None);
        assert_eq!(power_supply("BAT9", "POWER_SUPPLY_TYPE=Battery\nPOWER_SUPPLY_PRESENT=0\n"), None);
        let b = power_supply("BAT2", "POWER_SUPPLY_TYPE=Battery\nPOWER_SUPPLY_CAPACITY=140\n").unwrap();
        assert_eq!((b.percent, b.status.as_str(), b.power_watts), (Some(100.0), "unknown", None));
    }
}

/// Fuzz targets: any hwmon files or uevent text give plausible figures, never a panic.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzzing::config;
    use proptest::prelude::*;

    fn hwmon_file() -> impl Strategy<Value = (String, String)> {
        ("(temp|fan)[0-9]{1,2}_(input|label|max|crit)|name|\\PC{0,10}", prop_oneof!["-?[0-9]{1,9}", "\\PC{0,30}"])
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_hwmon_chip(name in "\\PC{0,80}", files in prop::collection::vec(hwmon_file(), 0..20)) {
            let (t, f) = hwmon_chip(&name, &files);
            for t in t {
                prop_assert!((-100.0..=250.0).contains(&t.celsius));
                prop_assert!(t.name.chars().all(|c| !c.is_control()));
            }
            for f in f {
                prop_assert!(f.rpm >= 0.0);
            }
        }

        #[test]
        fn any_uevent(lines in prop::collection::vec(prop_oneof![
            "POWER_SUPPLY_(TYPE=Battery|STATUS=(Charging|Full|x)|CAPACITY=-?[0-9]{1,5}|(ENERGY|CHARGE)_(NOW|FULL)=-?[0-9.e]{1,8}|(POWER|CURRENT|VOLTAGE)_NOW=-?[0-9.e]{1,12}|PRESENT=[01])",
            "\\PC{0,40}",
        ], 0..12)) {
            if let Some(b) = power_supply("BAT0", &lines.join("\n")) {
                prop_assert!(b.percent.is_none_or(|p| (0.0..=100.0).contains(&p)));
                prop_assert!(b.power_watts.is_none_or(|w| w.is_finite() && w >= 0.0));
            }
        }
    }
}
