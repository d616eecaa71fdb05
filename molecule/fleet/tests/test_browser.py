"""The seed's promise, with a real browser: browse to Open WebUI, create the admin account, pick the model the
fleet's real (CPU) vLLM serves, send a message, and see the engine's reply appear.

Headless Chromium (Debian's chromium and chromium-driver, installed by `make setup`) through Selenium, from the
controller to the port the frontend target publishes on its loopback, exactly where `make run` tells a person to
browse. Runs before test_fleet.py (file order), so this is the fleet's first account. A screenshot of each step is
kept under tests/output/browser/.
"""

import json
import os
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from fleet_settings import ADMIN
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[3]
SCENARIO = Path(__file__).resolve().parents[1]
SETTINGS = yaml.safe_load((SCENARIO / "molecule.yml").read_text())
PLATFORMS = {platform["name"]: platform for platform in SETTINGS["platforms"]}
SERVED = SETTINGS["provisioner"]["inventory"]["group_vars"]["workstations"]["vllm_service_served_model_name"]
ADDRESS, HOST_PORT, _CONTAINER_PORT = PLATFORMS["llmfleet-fleet-web1"]["published_ports"][0].split(":")
WEBUI = "http://%s:%s" % (ADDRESS, HOST_PORT)
OUTPUT = REPO / "tests" / "output" / "browser"
CHROMIUM = os.environ.get("LLMFLEET_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LLMFLEET_CHROMEDRIVER", "/usr/bin/chromedriver")
MESSAGE = "Hello from the browser test"
# The engine is a CPU build on a busy machine; Open WebUI also asks it for a title and follow-ups.
REPLY_TIMEOUT = 180


@pytest.fixture(scope="module")
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        assert shutil.which(path), "%s is missing: `make setup` installs chromium and chromium-driver" % path
    OUTPUT.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                     "--disable-gpu", "--no-first-run"):
        options.add_argument(argument)
    # The driver is Debian's, named explicitly: Selenium Manager never downloads one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def screenshot(driver, name):
    driver.save_screenshot(str(OUTPUT / ("%s.png" % name)))


def wait_for(driver, condition, seconds, what):
    try:
        return WebDriverWait(driver, seconds, poll_frequency=0.5).until(condition)
    except TimeoutException:
        screenshot(driver, "failed-" + what.replace(" ", "-"))
        pytest.fail("Open WebUI: %s did not happen within %d s (screenshot in %s)" % (what, seconds, OUTPUT))


def visible(driver, css):
    """The first displayed element matching the CSS selector, or None."""
    for element in driver.find_elements(By.CSS_SELECTOR, css):
        try:
            if element.is_displayed():
                return element
        except WebDriverException:
            continue
    return None


def button_with_text(driver, *texts):
    """The first displayed button whose text contains one of the texts (case-insensitive), or None."""
    for element in driver.find_elements(By.CSS_SELECTOR, "button"):
        try:
            label = element.text.strip().lower()
            if element.is_displayed() and any(text.lower() in label for text in texts):
                return element
        except WebDriverException:
            continue
    return None


def dismiss_notices(driver):
    """Close a release-notes dialog if Open WebUI shows one to a new account."""
    notice = button_with_text(driver, "Okay, Let's Go", "Let's Go")
    if notice:
        notice.click()


def engine_generated_tokens():
    """vLLM's own count of the tokens it generated (its /metrics), read through the workstation's published port."""
    address, host_port, _container_port = PLATFORMS["llmfleet-fleet-ws1"]["published_ports"][0].split(":")
    with urllib.request.urlopen("http://%s:%s/metrics" % (address, host_port), timeout=30) as response:
        metrics = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("vllm:generation_tokens_total"))


def test_a_person_signs_up_picks_the_model_and_gets_a_reply_from_the_engine(browser):
    tokens_before = engine_generated_tokens()
    browser.get(WEBUI)
    # A new Open WebUI greets its first visitor before the sign-up form. On a fleet that was verified before (molecule
    # verify again) the admin exists: sign in instead.
    wait_for(browser, lambda d: visible(d, "input[type=email]") or button_with_text(d, "Get started"), 120,
             "the sign-up page")
    start = button_with_text(browser, "Get started")
    if start:
        start.click()
    wait_for(browser, lambda d: visible(d, "input[type=email]"), 30, "the sign-up form")
    screenshot(browser, "1-sign-up")
    first_account = visible(browser, "input[autocomplete=name], input[name=name]")
    if first_account:
        assert "admin" in browser.find_element(By.TAG_NAME, "body").text.lower(), "not the first account's form"
        first_account.send_keys(ADMIN["name"])
    visible(browser, "input[type=email]").send_keys(ADMIN["email"])
    visible(browser, "input[type=password]").send_keys(ADMIN["password"])
    visible(browser, "button[type=submit]").click()

    # Signed in: the chat page, with its message box.
    wait_for(browser, lambda d: visible(d, "#chat-input"), 120, "the chat page after sign-up")
    time.sleep(1)
    dismiss_notices(browser)

    # The model selector offers the served model; pick it.
    selector = wait_for(browser, lambda d: visible(d, "#model-selector-model-button"), 30, "the model selector")
    selector.click()
    option = wait_for(browser, lambda d: visible(d, "#model-selector-list [data-value='%s']" % SERVED), 30,
                      "the served model in the selector")
    screenshot(browser, "2-model-selector")
    option.click()
    wait_for(browser, lambda d: SERVED in (visible(d, "#model-selector-model-button").get_attribute("aria-label")
                                           or ""), 10, "the model chosen")

    # Send a message and wait for the engine's reply under it.
    box = visible(browser, "#chat-input")
    box.click()
    box.send_keys(MESSAGE)
    box.send_keys(Keys.ENTER)
    wait_for(browser, lambda d: MESSAGE in d.find_element(By.TAG_NAME, "body").text, 30, "the message sent")

    # The reply is done when Open WebUI offers to copy it (it shows that button only for a finished message).
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".copy-response-button"), REPLY_TIMEOUT,
             "a finished reply from the engine")
    reply = " ".join(element.text.strip() for element in
                     browser.find_elements(By.CSS_SELECTOR, "#response-content-container")).strip()
    screenshot(browser, "3-reply")
    (OUTPUT / "reply.json").write_text(json.dumps({"model": SERVED, "message": MESSAGE, "reply": reply}, indent=1))
    assert reply, "the reply is empty"
    assert engine_generated_tokens() > tokens_before, "the engine generated nothing for the browser's message"
