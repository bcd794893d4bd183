"""The console as a person uses it, in Debian's Chromium (headless, driven by chromedriver).

Walks the user guides' console workflows against a real sidecar: sign in, create a key with an
alias, encrypt and decrypt in the online tools, schedule deletion and cancel it, the BYOK round
trip with material wrapped by the openssl CLI exactly as the guide does it, a secret rotated by
its stages, a limited principal refused, the audit page, the language switch. Stored strings
carry script payloads throughout; the page must show them as text and never run them.

Environment: KMS_CONSOLE (its URL), KMS_OWNER_ID/KMS_OWNER_SECRET, KMS_VIEWER_ID/_SECRET,
KMS_SHOTS (a directory for screenshots), KMS_WORK (a scratch directory for openssl's files).
Prints one JSON object with what the Rust side checks in the audit trail.
"""

import base64
import json
import os
import subprocess
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE = os.environ["KMS_CONSOLE"].rstrip("/")
SHOTS = os.environ["KMS_SHOTS"]
WORK = os.environ["KMS_WORK"]
XSS = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--window-size=1366,900", "--user-data-dir=" + tempfile.mkdtemp(prefix="chromium-"),
              "--lang=en-US"]:
        opts.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


d = browser()
d.set_page_load_timeout(30)


def go(path):
    d.get(BASE + path)


def text(css):
    return d.find_element(By.CSS_SELECTOR, css).text


def fill(form, name, value):
    el = form.find_element(By.NAME, name)
    if el.tag_name == "select":
        Select(el).select_by_value(value)
    else:
        el.clear()
        el.send_keys(value)


def replaced(old):
    """Whether `old` (an element of the previous page) is gone: stale, or – while the browser is
    between documents – not answerable at all."""
    try:
        old.is_enabled()
        return False
    except WebDriverException:
        return True


def loaded():
    WebDriverWait(d, 20).until(lambda drv: drv.execute_script("return document.readyState") == "complete")


def click(el):
    """Clicks and waits for the next page to replace this one (a click returns before that)."""
    old = d.find_element(By.TAG_NAME, "html")
    el.click()
    WebDriverWait(d, 20).until(lambda _: replaced(old))
    loaded()


def submit(form):
    click(form.find_element(By.CSS_SELECTOR, "button[type=submit]"))


def op_form(op):
    return d.find_element(By.CSS_SELECTOR, f"form.op input[name=op][value='{op}']").find_element(By.XPATH, "..")


def tool(op):
    return d.find_element(By.CSS_SELECTOR, f"#tool-{op} form")


def field(css_field):
    return d.find_element(By.CSS_SELECTOR, f"td[data-field='{css_field}']").text


def result(name):
    found = d.find_elements(By.CSS_SELECTOR, f"pre[data-field='{name}']")
    check(found, f"a result {name} (the page says: {flash()})")
    return found[0].text


def flash():
    els = d.find_elements(By.CSS_SELECTOR, ".flash")
    return els[0].text if els else ""


def shot(name):
    d.save_screenshot(os.path.join(SHOTS, name + ".png"))


def check(cond, what):
    if not cond:
        shot("failure")
        print(f"FAILED: {what}\nURL: {d.current_url}\nPAGE: {d.page_source[:3000]}", file=sys.stderr)
        sys.exit(1)


def no_script_ran():
    check(d.title != "pwned", "a stored string ran as script")
    check(not d.find_elements(By.CSS_SELECTOR, "main script, main img"), "a stored string became markup")


def sign_in(ak, sk):
    go("/signin")
    f = d.find_element(By.CSS_SELECTOR, "form[action='/signin']")
    fill(f, "AccessKeyId", ak)
    fill(f, "AccessKeySecret", sk)
    submit(f)


out = {}

# Sign in: a wrong secret first, then the owner.
go("/keys")
check(d.current_url.endswith("/signin"), "signed out, the console sends to the sign-in page")
sign_in(os.environ["KMS_OWNER_ID"], "wrong")
check("wrong" in flash(), "a wrong secret is refused")
sign_in(os.environ["KMS_OWNER_ID"], os.environ["KMS_OWNER_SECRET"])
check(d.current_url.endswith("/keys"), "signed in lands on the key list")
check(text("#principal") == "owner", "the page says who is signed in")

# Create a key with an alias and a hostile description (the guide: 创建密钥).
go("/key/new")
f = d.find_element(By.CSS_SELECTOR, "form[action='/key/create']")
fill(f, "AliasName", "alias/console-app")
fill(f, "Description", XSS)
Select(f.find_element(By.NAME, "Rotation")).select_by_value("90d")
submit(f)
key = field("KeyId")
out["key"] = key
check(field("Description") == XSS, "the description is shown as the text it is")
check(field("KeyState") == "Enabled" and field("AutomaticRotation") == "Enabled", "enabled, rotating")
check("alias/console-app" in text("#aliases"), "the alias is listed")
no_script_ran()
# A tag whose value is markup.
f = op_form("tag-add")
fill(f, "TagKey", "team")
fill(f, "TagValue", XSS)
submit(f)
check(XSS in text("#tags"), "the tag is shown as text")
no_script_ran()
shot("key-detail")

go("/keys")
row = d.find_element(By.XPATH, f"//table[@id='keys']//tr[td/a[text()='{key}']]")
check("alias/console-app" in row.text and "Aliyun_AES_256" in row.text, "the list shows alias and spec")
shot("key-list")

# Online tools: encrypt and decrypt with an EncryptionContext, under the alias.
go("/tools")
f = tool("encrypt")
fill(f, "KeyId", "alias/console-app")
fill(f, "Plaintext", "hello from the console")
fill(f, "EncryptionContext", '{"app":"web"}')
submit(f)
blob = result("CiphertextBlob")
check(len(base64.b64decode(blob)) > 28, "a ciphertext blob")
f = tool("decrypt")
fill(f, "CiphertextBlob", blob)
fill(f, "EncryptionContext", '{"app":"web"}')
submit(f)
check(result("Plaintext") == "hello from the console", "decrypts")
shot("tools")
f = tool("decrypt")
fill(f, "CiphertextBlob", blob)
fill(f, "EncryptionContext", '{"app":"other"}')
submit(f)
check("InvalidParameter" in flash() or "Refused" in flash(), "another context does not decrypt")

# Schedule deletion and cancel it (计划删除 / 取消删除).
go(f"/key?id={key}")
f = op_form("schedule-deletion")
fill(f, "PendingWindowInDays", "7")
submit(f)
check(field("KeyState") == "PendingDeletion" and field("DeleteDate"), "pending deletion, with its date")
submit(op_form("cancel-deletion"))
check(field("KeyState") == "Enabled" and not field("DeleteDate"), "cancelled: the key is back")
submit(op_form("disable"))
check(field("KeyState") == "Disabled", "disabled (禁用)")
submit(op_form("enable"))
check(field("KeyState") == "Enabled", "enabled again (启用)")

# BYOK as the guide walks it: an EXTERNAL key, the wrapping public key and token from the
# console, the material wrapped by openssl, uploaded.
go("/key/new")
f = d.find_element(By.CSS_SELECTOR, "form[action='/key/create']")
Select(f.find_element(By.NAME, "Origin")).select_by_value("EXTERNAL")
submit(f)
ext = field("KeyId")
out["byok_key"] = ext
check(field("KeyState") == "PendingImport", "an EXTERNAL key waits for its material")
click(d.find_element(By.LINK_TEXT, "Import key material"))
f = d.find_element(By.CSS_SELECTOR, "form[action='/key/import-params']")
Select(f.find_element(By.NAME, "WrappingAlgorithm")).select_by_value("RSAES_OAEP_SHA_256")
submit(f)
public_b64 = d.find_element(By.ID, "wrapping-public-key").get_attribute("value").strip()
shot("byok")
with open(os.path.join(WORK, "PublicKey_base64.txt"), "w") as fh:
    fh.write(public_b64)


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, cwd=WORK, capture_output=True)


openssl("rand", "-out", "KeyMaterial.bin", "32")
openssl("enc", "-d", "-base64", "-A", "-in", "PublicKey_base64.txt", "-out", "PublicKey.bin")
openssl("pkeyutl", "-encrypt", "-in", "KeyMaterial.bin", "-inkey", "PublicKey.bin", "-keyform", "DER", "-pubin",
        "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-out", "EncryptedKeyMaterial.bin")
openssl("enc", "-e", "-base64", "-A", "-in", "EncryptedKeyMaterial.bin", "-out", "EncryptedKeyMaterial_base64.txt")
with open(os.path.join(WORK, "EncryptedKeyMaterial_base64.txt")) as fh:
    wrapped = fh.read().strip()
with open(os.path.join(WORK, "KeyMaterial.bin"), "rb") as fh:
    out["byok_material"] = base64.b64encode(fh.read()).decode()
f = d.find_element(By.CSS_SELECTOR, "form[action='/key/import']")
fill(f, "EncryptedKeyMaterial", wrapped)
submit(f)
check(field("KeyState") == "Enabled" and field("Origin") == "EXTERNAL", "the imported key is enabled")
go("/tools")
f = tool("encrypt")
fill(f, "KeyId", ext)
fill(f, "Plaintext", "byok")
submit(f)
out["byok_blob"] = result("CiphertextBlob")

# A secret rotated by its stages (the guide's §11.4: new version, ACSCurrent moves).
go("/secret/new")
f = d.find_element(By.CSS_SELECTOR, "form[action='/secret/create']")
fill(f, "SecretName", "console-db")
fill(f, "SecretData", "pw-one")
fill(f, "Description", XSS)
submit(f)
check(field("Description") == XSS, "the secret's description is text")
no_script_ran()
f = op_form("put")
fill(f, "VersionId", "v2")
fill(f, "SecretData", "pw-two")
submit(f)


def stages(version):
    return d.find_element(By.CSS_SELECTOR, f"tr[data-version='{version}'] td.stages").text.split()


check(stages("v2") == ["ACSCurrent"] and stages("v1") == ["ACSPrevious"], f"v2 current: {stages('v1')} {stages('v2')}")
check(not d.find_elements(By.ID, "secret-value"), "no value is shown unasked")
click(d.find_element(By.CSS_SELECTOR, "tr[data-version='v1'] form[action='/secret/reveal'] button"))
check(text("#secret-value") == "pw-one", "v1's value, on request")
f = op_form("stage")
fill(f, "VersionStage", "ACSCurrent")
Select(f.find_element(By.NAME, "MoveToVersion")).select_by_value("v1")
submit(f)
check(stages("v1") == ["ACSCurrent"] and stages("v2") == ["ACSPrevious"], "rolled back by moving the stage")
shot("secret")

# Chinese, the guides' language.
click(d.find_element(By.CSS_SELECTOR, "nav.lang a[lang='zh-CN']"))
check("密钥管理" in text("nav.main") and "凭据" in d.find_element(By.TAG_NAME, "h1").text, "the page is in Chinese")
shot("secret-zh")
click(d.find_element(By.CSS_SELECTOR, "nav.lang a[lang='en']"))

# A forged form from another page in this browser: refused, nothing changed.
go(f"/key?id={key}")
old = d.find_element(By.TAG_NAME, "html")
d.execute_script(
    "var f=document.createElement('form');f.method='post';f.action='/key/op';"
    "for (const [k,v] of [['KeyId',arguments[0]],['op','disable'],['csrf','0'.repeat(64)]]) {"
    "var i=document.createElement('input');i.name=k;i.value=v;f.appendChild(i);}"
    "document.body.appendChild(f);f.submit();return 1;", key)
WebDriverWait(d, 20).until(lambda _: replaced(old))
loaded()
check("did not come from this console" in d.page_source, "a forged token is refused")
go(f"/key?id={key}")
check(field("KeyState") == "Enabled", "the forged form changed nothing")

# The audit page (owner only): the trail of all this, verified, plotted.
go("/audit")
check("Chain verified" in text("#chain"), "the chain verifies")
check(len(d.find_elements(By.CSS_SELECTOR, "figure.plot svg")) == 2, "two plots")
# The per-action plot counts every event (the table shows only the newest).
actions = {e.text for e in d.find_elements(By.CSS_SELECTOR, "figure.plot")[0].find_elements(By.TAG_NAME, "text")}
for a in ["CreateKey", "Encrypt", "Decrypt", "ScheduleKeyDeletion", "CancelKeyDeletion", "ImportKeyMaterial",
          "PutSecretValue", "UpdateSecretVersionStage", "GetSecretValue", "ConsoleSignIn"]:
    check(a in actions, f"{a} in the audit page")
check(d.find_elements(By.CSS_SELECTOR, "#events tr.err"), "the refused decrypt is marked")
shot("audit")

# Sign out, and a principal that may only look.
click(d.find_element(By.CSS_SELECTOR, "form[action='/signout'] button"))
check(d.current_url.endswith("/signin"), "signed out")
sign_in(os.environ["KMS_VIEWER_ID"], os.environ["KMS_VIEWER_SECRET"])
check(text("#principal") == "user:viewer", "signed in as the viewer")
go(f"/key?id={key}")
submit(op_form("disable"))
check("Forbidden.NoPermission" in flash(), "the engine's refusal is shown: " + flash())
check(field("KeyState") == "Enabled", "and nothing changed")
go("/audit")
check("owner only" in flash() or "owner only" in d.page_source, "the audit page is the owner's")
shot("viewer-refused")

d.quit()
print(json.dumps(out))
