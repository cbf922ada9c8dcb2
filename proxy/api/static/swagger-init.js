// Starts Swagger UI on /docs from the proxy's own /openapi.json.
// validatorUrl: null turns off the online validator badge, which would call an outside site.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
