#include "bench/chart.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace fnexec::bench {

LogAxis log_axis(double lo, double hi) {
  LogAxis a;
  if (!(hi > 0)) hi = 1;
  if (!(lo > 0) || lo > hi) lo = hi / 10;
  int first = static_cast<int>(std::floor(std::log10(lo) + 1e-9));
  int last = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
  if (last <= first) last = first + 1;
  a.min = std::pow(10.0, first);
  a.max = std::pow(10.0, last);
  for (int e = first; e <= last; ++e) {
    double d = std::pow(10.0, e);
    a.decades.push_back(d);
    if (e < last)
      for (int m = 2; m <= 9; ++m) a.minor.push_back(m * d);
  }
  return a;
}

std::string decade_label(double v) {
  int e = static_cast<int>(std::lround(std::log10(v)));
  if (e >= 0) return fmt::format("{:.0f}", std::pow(10.0, e));
  return fmt::format("{:.{}f}", std::pow(10.0, e), -e);
}

std::string xml_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        // XML 1.0 forbids most control characters even as references.
        out += (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n') ? '?' : c;
    }
  }
  return out;
}

namespace {

constexpr double kWidth = 960, kHeight = 540;
constexpr double kLeft = 80, kRight = 260, kTop = 70, kBottom = 70;
constexpr const char* kColors[] = {"#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd",
                                   "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};

}  // namespace

std::string render_cdf_svg(std::string_view title, std::string_view subtitle,
                           const std::vector<Curve>& curves) {
  double lo = 0, hi = 0;
  bool any = false;
  for (const auto& c : curves)
    for (double v : c.samples_ms) {
      if (!(v > 0)) continue;
      lo = any ? std::min(lo, v) : v;
      hi = any ? std::max(hi, v) : v;
      any = true;
    }
  LogAxis axis = log_axis(any ? lo : 0.1, any ? hi : 1);
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  const double l0 = std::log10(axis.min), l1 = std::log10(axis.max);
  auto x = [&](double ms) {
    double v = std::clamp(ms, axis.min, axis.max);
    return kLeft + (std::log10(v) - l0) / (l1 - l0) * pw;
  };
  auto y = [&](double frac) { return kTop + (1 - frac) * ph; };

  std::string s;
  s += fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"28\" font-size=\"16\" font-weight=\"bold\">{3}</text>\n"
      "<text x=\"{2}\" y=\"48\" fill=\"#555\">{4}</text>\n",
      kWidth, kHeight, kLeft, xml_escape(title), xml_escape(subtitle));
  // Grid and ticks: minor lines light, decades darker and labelled.
  s += "<g class=\"grid\" stroke=\"#eee\">\n";
  for (double m : axis.minor)
    s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\"/>\n", x(m), kTop, kTop + ph);
  s += "</g>\n<g class=\"ticks\" stroke=\"#bbb\">\n";
  for (double d : axis.decades)
    s += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\"/>\n", x(d), kTop,
                     kTop + ph + 5);
  for (int q = 0; q <= 4; ++q)
    s += fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\"/>\n", kLeft - 5, y(q / 4.0),
                     kLeft + pw);
  s += "</g>\n<g class=\"labels\" fill=\"#333\">\n";
  for (double d : axis.decades)
    s += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", x(d), kTop + ph + 20,
                     decade_label(d));
  for (int q = 0; q <= 4; ++q)
    s += fmt::format(
        "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\" dominant-baseline=\"middle\">{}%</text>\n",
        kLeft - 9, y(q / 4.0), q * 25);
  s += fmt::format(
      "<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">latency per invocation (ms, log "
      "scale)</text>\n",
      kLeft + pw / 2, kHeight - 22);
  s += fmt::format(
      "<text transform=\"translate(22 {:.1f}) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">"
      "invocations at or below this latency</text>\n</g>\n",
      kTop + ph / 2);
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n",
                   kLeft, kTop, pw, ph);

  // One step path per curve: the empirical CDF, rising 1/n at each sample.
  for (size_t i = 0; i < curves.size(); ++i) {
    std::vector<double> v = curves[i].samples_ms;
    std::sort(v.begin(), v.end());
    const char* color = kColors[i % std::size(kColors)];
    std::string d;
    if (!v.empty()) {
      d = fmt::format("M{:.1f},{:.1f}", x(v[0]), y(0));
      for (size_t k = 0; k < v.size(); ++k) {
        if (k > 0) d += fmt::format("H{:.1f}", x(v[k]));
        d += fmt::format("V{:.1f}", y(static_cast<double>(k + 1) / static_cast<double>(v.size())));
      }
    }
    s += fmt::format(
        "<path class=\"curve\" data-label=\"{}\" d=\"{}\" fill=\"none\" stroke=\"{}\" "
        "stroke-width=\"{}\"/>\n",
        xml_escape(curves[i].label), d, color, curves[i].label.starts_with("fnexec") ? 2.5 : 1.5);
  }
  // Legend, right of the plot.
  s += "<g class=\"legend\">\n";
  for (size_t i = 0; i < curves.size(); ++i) {
    double ly = kTop + 10 + static_cast<double>(i) * 22;
    double lx = kLeft + pw + 20;
    s += fmt::format(
        "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"{3}\" stroke-width=\"3\"/>"
        "<text x=\"{4}\" y=\"{1}\" dominant-baseline=\"middle\">{5}</text>\n",
        lx, ly, lx + 24, kColors[i % std::size(kColors)], lx + 32, xml_escape(curves[i].label));
  }
  s += "</g>\n</svg>\n";
  return s;
}

}  // namespace fnexec::bench
