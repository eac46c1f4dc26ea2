//! Rule variables (`$HOME_NET`, `$HTTP_PORTS`, …): names mapped to text that
//! is parsed where it is used, with the grammar of the field it appears in.

use std::collections::BTreeMap;

/// Rule variables: a name (without `$`) mapped to its textual value.
///
/// A value is written in the grammar of the header field that uses it
/// (addresses or ports) and may itself use variables; nesting is limited, so
/// a cycle refuses the rule that uses it instead of looping. Address and port
/// variables share one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Vars {
    map: BTreeMap<String, String>,
}

impl Vars {
    /// No variables: every `$NAME` refuses its rule.
    pub fn new() -> Self {
        Self::default()
    }

    /// The address and port groups of Suricata's default `suricata.yaml`.
    pub fn suricata_defaults() -> Self {
        let mut v = Self::new();
        v.set("HOME_NET", "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]");
        v.set("EXTERNAL_NET", "!$HOME_NET");
        for name in [
            "HTTP_SERVERS",
            "SMTP_SERVERS",
            "SQL_SERVERS",
            "DNS_SERVERS",
            "TELNET_SERVERS",
            "AIM_SERVERS",
            "DC_SERVERS",
            "DNP3_SERVER",
            "DNP3_CLIENT",
            "MODBUS_CLIENT",
            "MODBUS_SERVER",
            "ENIP_CLIENT",
            "ENIP_SERVER",
        ] {
            v.set(name, "$HOME_NET");
        }
        for (name, value) in [
            ("HTTP_PORTS", "80"),
            ("SHELLCODE_PORTS", "!80"),
            ("ORACLE_PORTS", "1521"),
            ("SSH_PORTS", "22"),
            ("DNP3_PORTS", "20000"),
            ("MODBUS_PORTS", "502"),
            ("FILE_DATA_PORTS", "[$HTTP_PORTS,110,143]"),
            ("FTP_PORTS", "21"),
            ("GENEVE_PORTS", "6081"),
            ("VXLAN_PORTS", "4789"),
            ("TEREDO_PORTS", "3544"),
        ] {
            v.set(name, value);
        }
        v
    }

    /// Sets `name` (a leading `$` is ignored) to `value`, replacing any
    /// earlier value.
    pub fn set(&mut self, name: &str, value: &str) -> &mut Self {
        let name = name.strip_prefix('$').unwrap_or(name);
        self.map.insert(name.to_string(), value.to_string());
        self
    }

    /// The value of `name` (without `$`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map.get(name).map(String::as_str)
    }
}
