// Security keys and passkeys (WebAuthn) on the sign-in and account pages.
//
// Loaded as <script src="/static/webauthn.js" defer></script>: no inline script (CSP script-src 'self').
// It wires up, when present:
//   <button type="button" id="webauthn-register"     data-options-url data-verify-url data-csrf
//           data-name-input="ID of the name input (optional; else the form's input name=name)">
//   <button type="button" id="webauthn-authenticate" data-options-url data-verify-url data-csrf>
//   <p id="webauthn-error" role="alert" hidden></p>
// A click POSTs {"csrf_token"} as JSON to data-options-url, which answers {"publicKey": options} (the
// options as py_webauthn's options_to_json_dict writes them, base64url for bytes) and may add a
// "challenge_id", sent back unchanged. The browser's answer is POSTed to data-verify-url as
// {"credential": PublicKeyCredential JSON, "csrf_token", "challenge_id"?, "name"?, "trust_device"?}.
// Every answer is {"redirect": url} (followed) or {"error": message} (shown in #webauthn-error).
(function () {
  "use strict";

  var GENERIC = "The security key could not be used. Please try again.";

  function toBuffer(base64url) {
    var base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
    var binary = atob(base64 + "===".slice((base64.length + 3) % 4));
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function withBuffers(descriptors) {
    return (descriptors || []).map(function (d) {
      return Object.assign({}, d, { id: toBuffer(d.id) });
    });
  }

  function creationOptions(json) {
    return Object.assign({}, json, {
      challenge: toBuffer(json.challenge),
      user: Object.assign({}, json.user, { id: toBuffer(json.user.id) }),
      excludeCredentials: withBuffers(json.excludeCredentials),
    });
  }

  function requestOptions(json) {
    return Object.assign({}, json, {
      challenge: toBuffer(json.challenge),
      allowCredentials: withBuffers(json.allowCredentials),
    });
  }

  // PublicKeyCredential.toJSON(), written out for browsers that lack it.
  function credentialJSON(credential) {
    var r = credential.response;
    var response = { clientDataJSON: toBase64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toBase64url(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = toBase64url(r.authenticatorData);
      response.signature = toBase64url(r.signature);
      response.userHandle = r.userHandle ? toBase64url(r.userHandle) : null;
    }
    return {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: response,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
    };
  }

  function showError(button, message) {
    var box = document.getElementById("webauthn-error");
    if (!box) {
      box = document.createElement("p");
      box.id = "webauthn-error";
      box.className = "error";
      box.setAttribute("role", "alert");
      button.insertAdjacentElement("afterend", box);
    }
    box.textContent = message;
    box.hidden = false;
  }

  async function postJSON(url, body) {
    var response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    var data;
    try {
      data = await response.json();
    } catch (e) {
      throw new Error(GENERIC);
    }
    if (data.redirect) {
      window.location.assign(data.redirect);
      return null;
    }
    if (!response.ok || data.error) throw new Error(data.error || GENERIC);
    return data;
  }

  function browserMessage(error) {
    if (error && error.name === "NotAllowedError") {
      return "The request was cancelled or timed out. Please try again.";
    }
    if (error && error.name === "InvalidStateError") {
      return "This security key is already registered.";
    }
    if (error && error.name === "SecurityError") {
      return "Security keys cannot be used at this address.";
    }
    return (error && error.message) || GENERIC;
  }

  function nameOf(button) {
    var input = button.dataset.nameInput
      ? document.getElementById(button.dataset.nameInput)
      : button.form && button.form.elements.namedItem("name");
    return input && input.value ? input.value.trim() : "";
  }

  function trustDevice(button) {
    var box = button.form && button.form.elements.namedItem("trust_device");
    return Boolean(box && box.checked);
  }

  async function ceremony(button, register) {
    if (!window.PublicKeyCredential || !navigator.credentials) {
      showError(button, "This browser does not support security keys or passkeys.");
      return;
    }
    var csrf = button.dataset.csrf;
    var started = await postJSON(button.dataset.optionsUrl, { csrf_token: csrf });
    if (!started) return;
    var options = started.publicKey || started;
    var credential;
    try {
      credential = register
        ? await navigator.credentials.create({ publicKey: creationOptions(options) })
        : await navigator.credentials.get({ publicKey: requestOptions(options) });
    } catch (error) {
      throw new Error(browserMessage(error));
    }
    if (!credential) throw new Error(GENERIC);
    var body = { credential: credentialJSON(credential), csrf_token: csrf };
    if (started.challenge_id) body.challenge_id = started.challenge_id;
    if (register) body.name = nameOf(button);
    else body.trust_device = trustDevice(button);
    await postJSON(button.dataset.verifyUrl, body);
  }

  function wire(id, register) {
    var button = document.getElementById(id);
    if (!button) return;
    button.addEventListener("click", async function (event) {
      event.preventDefault();
      if (button.disabled) return;
      button.disabled = true;
      var box = document.getElementById("webauthn-error");
      if (box) box.hidden = true;
      try {
        await ceremony(button, register);
      } catch (error) {
        showError(button, browserMessage(error));
      } finally {
        button.disabled = false;
      }
    });
  }

  wire("webauthn-register", true);
  wire("webauthn-authenticate", false);
})();
