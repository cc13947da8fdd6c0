// Starts Swagger UI on the docs page (admin_service/docs.py). A file of its own, not an inline
// script, so that the page's Content-Security-Policy allows no inline script at all. The page
// names the OpenAPI document in the container's data-spec-url attribute.
window.addEventListener("load", function () {
  var container = document.getElementById("swagger-ui-container");
  window.ui = SwaggerUIBundle({
    url: container.dataset.specUrl,
    dom_id: "#swagger-ui-container",
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "BaseLayout",
  });
});
