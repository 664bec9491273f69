//! What a car may do on an OSM way: its highway class, access, direction of
//! travel and legal speed limit (`maxspeed`, including country-style values
//! such as `DE:urban`).
//!
//! The legal limit and the expected speed (see [`crate::free_flow`]) are kept
//! apart on purpose: ETAs need how fast traffic really moves, speeding
//! detection needs what the law allows.

/// Car-routable OSM highway classes, ordered from fastest to slowest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum HighwayClass {
    Motorway = 0,
    MotorwayLink,
    Trunk,
    TrunkLink,
    Primary,
    PrimaryLink,
    Secondary,
    SecondaryLink,
    Tertiary,
    TertiaryLink,
    Unclassified,
    Residential,
    LivingStreet,
    Service,
}

impl HighwayClass {
    pub const ALL: [HighwayClass; 14] = [
        Self::Motorway,
        Self::MotorwayLink,
        Self::Trunk,
        Self::TrunkLink,
        Self::Primary,
        Self::PrimaryLink,
        Self::Secondary,
        Self::SecondaryLink,
        Self::Tertiary,
        Self::TertiaryLink,
        Self::Unclassified,
        Self::Residential,
        Self::LivingStreet,
        Self::Service,
    ];

    pub fn from_tag(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == value)
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        Self::ALL.get(usize::from(v)).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Motorway => "motorway",
            Self::MotorwayLink => "motorway_link",
            Self::Trunk => "trunk",
            Self::TrunkLink => "trunk_link",
            Self::Primary => "primary",
            Self::PrimaryLink => "primary_link",
            Self::Secondary => "secondary",
            Self::SecondaryLink => "secondary_link",
            Self::Tertiary => "tertiary",
            Self::TertiaryLink => "tertiary_link",
            Self::Unclassified => "unclassified",
            Self::Residential => "residential",
            Self::LivingStreet => "living_street",
            Self::Service => "service",
        }
    }

    /// Classes that are one-way unless tagged otherwise.
    fn implies_oneway(self) -> bool {
        matches!(self, Self::Motorway | Self::MotorwayLink)
    }
}

/// Legal speed limit of one direction of a road.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpeedLimit {
    /// No limit was tagged or it could not be interpreted.
    Unknown,
    /// Explicitly unlimited (`maxspeed=none`, German motorways).
    None,
    /// A limit in km/h (rounded).
    Kmh(u8),
}

impl SpeedLimit {
    /// Compact storage: 0 unknown, 255 none, otherwise km/h.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Unknown => 0,
            Self::None => 255,
            Self::Kmh(v) => v.clamp(1, 254),
        }
    }

    pub fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Unknown,
            255 => Self::None,
            v => Self::Kmh(v),
        }
    }
}

/// Everything the graph needs to know about one car-routable way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WayAttributes {
    pub class: HighwayClass,
    /// Cars may drive in the direction of the way's node order.
    pub forward: bool,
    /// Cars may drive against it.
    pub backward: bool,
    pub limit_forward: SpeedLimit,
    pub limit_backward: SpeedLimit,
}

/// Why a way with a `highway` tag was not taken as a car road (for the import report).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    NotHighway,
    NotCarClass,
    NoAccess,
    Area,
}

const DENIED_ACCESS: [&str; 7] = [
    "no",
    "private",
    "agricultural",
    "forestry",
    "emergency",
    "military",
    "discouraged_no",
];

/// Interprets the tags of an OSM way for car routing.
pub fn way_attributes<'a>(
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<WayAttributes, Rejection> {
    let mut highway = None;
    let (mut access, mut vehicle, mut motor_vehicle, mut motorcar) = (None, None, None, None);
    let (mut oneway, mut junction, mut area) = (None, None, None);
    let (mut maxspeed, mut maxspeed_fwd, mut maxspeed_bwd) = (None, None, None);
    for (k, v) in tags {
        match k {
            "highway" => highway = Some(v),
            "access" => access = Some(v),
            "vehicle" => vehicle = Some(v),
            "motor_vehicle" => motor_vehicle = Some(v),
            "motorcar" => motorcar = Some(v),
            "oneway" => oneway = Some(v),
            "junction" => junction = Some(v),
            "area" => area = Some(v),
            "maxspeed" => maxspeed = Some(v),
            "maxspeed:forward" => maxspeed_fwd = Some(v),
            "maxspeed:backward" => maxspeed_bwd = Some(v),
            _ => {}
        }
    }
    let highway = highway.ok_or(Rejection::NotHighway)?;
    // construction, proposed, footway, ... are simply not in the class list.
    let class = HighwayClass::from_tag(highway).ok_or(Rejection::NotCarClass)?;
    if area == Some("yes") {
        return Err(Rejection::Area);
    }
    // The most specific access tag wins (motorcar > motor_vehicle > vehicle > access).
    if let Some(a) = motorcar.or(motor_vehicle).or(vehicle).or(access)
        && DENIED_ACCESS.contains(&a)
    {
        return Err(Rejection::NoAccess);
    }
    let roundabout = matches!(junction, Some("roundabout" | "circular"));
    let (forward, backward) = match oneway {
        Some("yes" | "true" | "1" | "reversible") => (true, false),
        Some("-1" | "reverse") => (false, true),
        Some("no" | "false" | "0" | "alternating") => (true, true),
        _ if roundabout || class.implies_oneway() => (true, false),
        _ => (true, true),
    };
    let common = maxspeed.map_or(SpeedLimit::Unknown, parse_maxspeed);
    let limit_forward = maxspeed_fwd.map_or(common, parse_maxspeed);
    let limit_backward = maxspeed_bwd.map_or(common, parse_maxspeed);
    Ok(WayAttributes {
        class,
        forward,
        backward,
        limit_forward,
        limit_backward,
    })
}

/// Parses an OSM `maxspeed` value: `50`, `50 km/h`, `30 mph`, `none`, `walk`,
/// `DE:urban`, `FR:rural`, `GB:nsl_single`, `DE:zone30`, `50;30` (first value).
pub fn parse_maxspeed(value: &str) -> SpeedLimit {
    let value = value.split(';').next().unwrap_or("").trim();
    match value {
        "none" | "unlimited" => return SpeedLimit::None,
        "walk" => return SpeedLimit::Kmh(7),
        _ => {}
    }
    if let Some((country, kind)) = value.split_once(':') {
        return country_limit(country, kind);
    }
    let (number, factor) = if let Some(n) = value.strip_suffix("mph") {
        (n, 1.609_344)
    } else if let Some(n) = value.strip_suffix("km/h") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix("kmh") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix("knots") {
        (n, 1.852)
    } else {
        (value, 1.0)
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v * factor < 254.5 => {
            SpeedLimit::Kmh((v * factor).round() as u8)
        }
        _ => SpeedLimit::Unknown,
    }
}

/// Implicit limits (`XX:kind`) from the OSM wiki's table of default speed limits,
/// for the countries and kinds seen most often; anything else is unknown.
fn country_limit(country: &str, kind: &str) -> SpeedLimit {
    let mph = |v: f64| SpeedLimit::Kmh((v * 1.609_344).round() as u8);
    // Zones: `DE:zone30`, `DE:zone:30`.
    if let Some(n) = kind.strip_prefix("zone") {
        return match n.trim_start_matches(':').parse::<u8>() {
            Ok(v) if v > 0 => SpeedLimit::Kmh(v),
            _ => SpeedLimit::Unknown,
        };
    }
    match (country, kind) {
        ("GB" | "UK", "nsl_single") => mph(60.0),
        ("GB" | "UK", "nsl_dual" | "motorway") => mph(70.0),
        ("GB" | "UK", "urban") => mph(30.0),
        ("US", "urban") => mph(25.0),
        ("US", "rural") => mph(55.0),
        (_, "living_street") => SpeedLimit::Kmh(if country == "RU" { 20 } else { 7 }),
        (_, "bicycle_road" | "cyclestreet") => SpeedLimit::Kmh(30),
        ("RU" | "UA" | "BY", "urban") => SpeedLimit::Kmh(60),
        (_, "urban") => SpeedLimit::Kmh(50),
        ("DE", "motorway") => SpeedLimit::None,
        ("DE" | "AT" | "BE" | "CZ" | "SK" | "PL" | "HU" | "SI" | "HR" | "LU", "rural") => {
            SpeedLimit::Kmh(if country == "PL" || country == "HU" {
                90
            } else {
                100
            })
        }
        ("FR" | "CH" | "NL" | "DK" | "NO" | "SE" | "FI" | "PT" | "IE", "rural") => {
            SpeedLimit::Kmh(80)
        }
        ("IT" | "ES" | "GR" | "RU" | "UA" | "RO", "rural") => SpeedLimit::Kmh(90),
        ("DE", "trunk") => SpeedLimit::Kmh(100),
        ("CH", "motorway") => SpeedLimit::Kmh(120),
        ("ES" | "PT" | "BE" | "NL" | "SE", "motorway") => SpeedLimit::Kmh(120),
        (
            "FR" | "IT" | "AT" | "CZ" | "SK" | "PL" | "HU" | "SI" | "HR" | "DK" | "LU" | "GR",
            "motorway",
        ) => SpeedLimit::Kmh(130),
        ("RU" | "UA", "motorway") => SpeedLimit::Kmh(110),
        _ => SpeedLimit::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(tags: &[(&'static str, &'static str)]) -> Result<WayAttributes, Rejection> {
        way_attributes(tags.iter().copied())
    }

    #[test]
    fn maxspeed_values() {
        assert_eq!(parse_maxspeed("50"), SpeedLimit::Kmh(50));
        assert_eq!(parse_maxspeed("50 km/h"), SpeedLimit::Kmh(50));
        assert_eq!(parse_maxspeed("30 mph"), SpeedLimit::Kmh(48));
        assert_eq!(parse_maxspeed("none"), SpeedLimit::None);
        assert_eq!(parse_maxspeed("DE:urban"), SpeedLimit::Kmh(50));
        assert_eq!(parse_maxspeed("DE:rural"), SpeedLimit::Kmh(100));
        assert_eq!(parse_maxspeed("DE:motorway"), SpeedLimit::None);
        assert_eq!(parse_maxspeed("FR:rural"), SpeedLimit::Kmh(80));
        assert_eq!(parse_maxspeed("GB:nsl_single"), SpeedLimit::Kmh(97));
        assert_eq!(parse_maxspeed("DE:zone30"), SpeedLimit::Kmh(30));
        assert_eq!(parse_maxspeed("DE:zone:20"), SpeedLimit::Kmh(20));
        assert_eq!(parse_maxspeed("50;30"), SpeedLimit::Kmh(50));
        assert_eq!(parse_maxspeed("signals"), SpeedLimit::Unknown);
        assert_eq!(parse_maxspeed("-5"), SpeedLimit::Unknown);
        assert_eq!(parse_maxspeed("NaN"), SpeedLimit::Unknown);
        assert_eq!(parse_maxspeed("9999"), SpeedLimit::Unknown);
        assert_eq!(parse_maxspeed("XX:whatever"), SpeedLimit::Unknown);
    }

    #[test]
    fn classes_and_access() {
        assert_eq!(attrs(&[("building", "yes")]), Err(Rejection::NotHighway));
        assert_eq!(
            attrs(&[("highway", "footway")]),
            Err(Rejection::NotCarClass)
        );
        assert_eq!(
            attrs(&[("highway", "construction")]),
            Err(Rejection::NotCarClass)
        );
        assert_eq!(
            attrs(&[("highway", "proposed")]),
            Err(Rejection::NotCarClass)
        );
        assert_eq!(
            attrs(&[("highway", "service"), ("access", "private")]),
            Err(Rejection::NoAccess)
        );
        assert_eq!(
            attrs(&[("highway", "primary"), ("motor_vehicle", "no")]),
            Err(Rejection::NoAccess)
        );
        assert_eq!(
            attrs(&[("highway", "pedestrian"), ("area", "yes")]),
            Err(Rejection::NotCarClass)
        );
        assert_eq!(
            attrs(&[("highway", "service"), ("area", "yes")]),
            Err(Rejection::Area)
        );
        // A more specific tag overrides the general one.
        assert!(
            attrs(&[
                ("highway", "residential"),
                ("access", "no"),
                ("motor_vehicle", "yes")
            ])
            .is_ok()
        );
        assert!(attrs(&[("highway", "residential"), ("access", "destination")]).is_ok());
    }

    #[test]
    fn directions() {
        let dir =
            |t: &[(&'static str, &'static str)]| attrs(t).map(|a| (a.forward, a.backward)).unwrap();
        assert_eq!(dir(&[("highway", "residential")]), (true, true));
        assert_eq!(
            dir(&[("highway", "residential"), ("oneway", "yes")]),
            (true, false)
        );
        assert_eq!(
            dir(&[("highway", "residential"), ("oneway", "-1")]),
            (false, true)
        );
        assert_eq!(
            dir(&[("highway", "tertiary"), ("junction", "roundabout")]),
            (true, false)
        );
        assert_eq!(
            dir(&[("highway", "tertiary"), ("junction", "circular")]),
            (true, false)
        );
        assert_eq!(dir(&[("highway", "motorway")]), (true, false));
        assert_eq!(
            dir(&[("highway", "motorway"), ("oneway", "no")]),
            (true, true)
        );
        assert_eq!(
            dir(&[("highway", "primary"), ("oneway", "reversible")]),
            (true, false)
        );
    }

    #[test]
    fn limits_per_direction() {
        let a = attrs(&[
            ("highway", "primary"),
            ("maxspeed", "70"),
            ("maxspeed:backward", "50"),
        ])
        .unwrap();
        assert_eq!(a.limit_forward, SpeedLimit::Kmh(70));
        assert_eq!(a.limit_backward, SpeedLimit::Kmh(50));
        for v in 0..=255u8 {
            assert_eq!(SpeedLimit::from_u8(v).to_u8(), v);
        }
    }
}
