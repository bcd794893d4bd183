//! The console's two languages: Chinese, the user guides' own (their terms: 密钥列表, 计划删除,
//! 轮转周期 …), and English. Pages write the English text; [`Lang::t`] gives the Chinese from the
//! table. A test reads the console's sources and fails on any `.t("…")` the table lacks.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "zh" | "zh-CN" | "zh-cn" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    /// The browser's preference: Chinese when it asks for it before English.
    pub fn from_accept_language(header: &str) -> Lang {
        let (zh, en) = (header.find("zh"), header.find("en"));
        match (zh, en) {
            (Some(z), Some(e)) if z < e => Lang::Zh,
            (Some(_), None) => Lang::Zh,
            _ => Lang::En,
        }
    }

    /// `en` in this language.
    pub fn t(self, en: &'static str) -> &'static str {
        match self {
            Lang::En => en,
            Lang::Zh => ZH.iter().find(|(e, _)| *e == en).map_or(en, |(_, z)| z),
        }
    }
}

const ZH: &[(&str, &str)] = &[
    ("Key Management Service console", "密钥管理服务控制台"),
    ("Keys", "密钥管理"),
    ("Key list", "密钥列表"),
    ("Secrets", "凭据管理"),
    ("Online tools", "在线工具"),
    ("Audit trail", "操作审计"),
    ("Sign in", "登录"),
    ("Sign out", "退出"),
    ("Signed in as", "当前身份"),
    ("AccessKey ID or user name", "AccessKey ID 或用户名"),
    ("AccessKey secret or password", "AccessKey Secret 或密码"),
    ("The access key or its secret is wrong.", "AccessKey 或其 Secret（用户名或密码）错误。"),
    (
        "Your session ended (signed out, idle too long or the service restarted). Sign in again.",
        "会话已结束（已退出、空闲超时或服务重启），请重新登录。",
    ),
    (
        "The form expired or did not come from this console. Nothing was changed.",
        "表单已过期或并非来自本控制台，未做任何更改。",
    ),
    ("Create key", "创建密钥"),
    ("Key ID", "密钥 ID"),
    ("Alias", "别名"),
    ("Aliases", "别名"),
    ("Key spec", "密钥类型"),
    ("Key usage", "密钥用途"),
    ("Key state", "密钥状态"),
    ("Protection level", "保护级别"),
    ("Creator", "创建者"),
    ("Created", "创建时间"),
    ("Next rotation", "下次轮转时间"),
    ("Description", "描述"),
    ("Origin", "密钥材料来源"),
    ("Rotation interval", "轮转周期"),
    ("Automatic rotation", "自动轮转"),
    ("Deletion protection", "删除保护"),
    ("Deletion date", "删除时间"),
    ("Primary version", "主版本"),
    ("Versions", "密钥版本"),
    ("Version", "版本"),
    ("Tags", "标签"),
    ("Tag key", "标签键"),
    ("Tag value", "标签值"),
    ("Add", "添加"),
    ("Remove", "删除"),
    ("Filter", "筛选"),
    ("All", "全部"),
    ("Previous", "上一页"),
    ("Next", "下一页"),
    ("Page", "页"),
    ("keys", "个密钥"),
    ("Details", "详情"),
    ("Enable", "启用"),
    ("Disable", "禁用"),
    ("Schedule deletion", "计划删除"),
    ("Cancel deletion", "取消删除"),
    ("Pending window (days)", "预删除周期（天）"),
    ("Create version", "创建密钥版本"),
    ("Set rotation", "设置轮转"),
    ("Off", "不开启"),
    ("Save", "保存"),
    ("Download public key (PEM)", "下载公钥（PEM）"),
    ("Import key material", "导入密钥材料"),
    ("Get wrapping public key and import token", "获取包装公钥和导入令牌"),
    ("Wrapping key spec", "包装密钥类型"),
    ("Wrapping algorithm", "包装算法"),
    ("Wrapping public key (base64 DER)", "包装公钥（Base64 DER）"),
    ("Import token", "导入令牌"),
    ("Valid until", "有效期至"),
    ("Wrapped key material (base64)", "加密后的密钥材料（Base64）"),
    ("Material expires (Unix time, 0 = never)", "密钥材料过期时间（Unix 时间，0 为永不过期）"),
    ("Delete key material", "删除密钥材料"),
    ("Download", "下载"),
    ("Plaintext", "明文"),
    ("Ciphertext blob", "密文"),
    ("Encryption context (JSON)", "加密上下文（JSON）"),
    ("Encrypt", "加密"),
    ("Decrypt", "解密"),
    ("Generate data key", "生成数据密钥"),
    ("Data key bytes", "数据密钥字节数"),
    ("Sign", "签名"),
    ("Verify", "验签"),
    ("Algorithm", "算法"),
    ("Message", "消息"),
    ("Signature (base64)", "签名值（Base64）"),
    ("Result", "结果"),
    ("The signature verifies.", "签名验证通过。"),
    ("The signature does not verify.", "签名验证失败。"),
    ("At most 6 KiB of plaintext.", "明文最多 6 KiB。"),
    ("Create secret", "创建凭据"),
    ("Secret name", "凭据名称"),
    ("Secret value", "凭据值"),
    ("Encryption key", "加密主密钥"),
    ("Default (the secrets service key)", "默认（凭据服务密钥）"),
    ("Version ID", "版本号"),
    ("Stages", "版本状态"),
    ("Store a new version", "存入新版本"),
    ("Move stage", "移动版本状态"),
    ("Stage", "版本状态"),
    ("To version", "目标版本"),
    ("Show value", "查看凭据值"),
    ("Showing a value is recorded in the audit trail.", "查看凭据值会记录在操作审计中。"),
    ("Delete secret", "删除凭据"),
    ("Recovery window (days)", "恢复窗口（天）"),
    ("Delete at once, without recovery", "立即删除，不可恢复"),
    ("Restore", "恢复凭据"),
    ("Planned deletion", "计划删除时间"),
    ("Updated", "更新时间"),
    ("Name contains", "名称包含"),
    ("Done.", "操作成功。"),
    ("Refused", "请求被拒绝"),
    ("Time", "时间"),
    ("Principal", "身份"),
    ("Action", "操作"),
    ("Resources", "资源"),
    ("Result code", "结果"),
    ("Source", "来源"),
    ("From", "起始时间"),
    ("Until", "结束时间"),
    ("Key or secret", "密钥或凭据"),
    ("Chain verified", "审计链校验通过"),
    ("Chain broken", "审计链校验失败"),
    ("Requests per action", "各操作请求数"),
    ("Errors over time", "错误随时间分布"),
    ("events", "条事件"),
    ("The audit trail is shown to the owner only.", "操作审计仅对主账号开放。"),
    ("The audit trail is off in this sidecar's configuration.", "此实例的配置未开启操作审计。"),
    ("No matching events.", "没有匹配的事件。"),
    ("Showing the newest", "显示最新的"),
    ("Language", "语言"),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `.t("…")` in the console's sources has a Chinese entry (a literal split over lines
    /// is not seen: keep them on one line).
    #[test]
    fn every_string_the_console_shows_has_a_chinese_entry() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/console");
        let mut missing = Vec::new();
        let mut seen = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            if path.extension().and_then(|x| x.to_str()) != Some("rs") || path.ends_with("i18n.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for part in text.split(".t(\"").skip(1) {
                let Some(end) = part.find("\")") else { continue };
                let en = &part[..end];
                seen += 1;
                if !ZH.iter().any(|(e, _)| *e == en) {
                    missing.push(format!("{}: {en}", path.display()));
                }
            }
        }
        assert!(seen > 50, "the scan found the pages' strings ({seen})");
        assert!(missing.is_empty(), "no Chinese for:\n{}", missing.join("\n"));
    }

    #[test]
    fn the_browser_preference_picks_the_language() {
        assert_eq!(Lang::from_accept_language("zh-CN,zh;q=0.9,en;q=0.8"), Lang::Zh);
        assert_eq!(Lang::from_accept_language("en-US,en;q=0.9,zh;q=0.5"), Lang::En);
        assert_eq!(Lang::from_accept_language(""), Lang::En);
        assert_eq!(Lang::Zh.t("Schedule deletion"), "计划删除");
        assert_eq!(Lang::En.t("Schedule deletion"), "Schedule deletion");
    }
}
