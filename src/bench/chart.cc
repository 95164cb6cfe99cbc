#include "bench/chart.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

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
// Tableau's ten, then six from the hue gaps between them (indigo, teal, olive green, gold, plum,
// black), so up to sixteen groups get colours that read apart.
constexpr const char* kColors[] = {"#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
                                   "#e377c2", "#17becf", "#7f7f7f", "#bcbd22", "#393b79", "#00a087",
                                   "#637939", "#e7ba52", "#7b4173", "#000000"};
// Solid first; each pattern stays recognisable in a 30-pixel legend swatch.
constexpr const char* kDashes[] = {"", "8 4", "2 3", "10 3 2 3", "1 5"};

// Past the listed colours: hues a golden angle apart at one saturation and lightness, so each new
// one lands far from the generated ones before it.
std::string generated_color(size_t n) {
  const double hue = std::fmod(static_cast<double>(n) * 137.508, 360.0);
  constexpr double kSat = 0.7, kLight = 0.42;
  const double a = kSat * std::min(kLight, 1 - kLight);
  auto channel = [&](int k0) {
    double k = std::fmod(k0 + hue / 30, 12.0);
    double v = kLight - a * std::max(-1.0, std::min({k - 3, 9 - k, 1.0}));
    return static_cast<int>(std::lround(v * 255));
  };
  return fmt::format("#{:02x}{:02x}{:02x}", channel(0), channel(8), channel(4));
}

// Past the listed patterns: "N 2 1 2" with N growing with n, unlike every listed one.
std::string generated_dash(size_t n) {
  return fmt::format("{} 2 1 2", n + 12);
}

// A curve without a group or function is a group (or function) of its own.
const std::string& group_key(const Curve& c) {
  return c.group.empty() ? c.label : c.group;
}
const std::string& function_key(const Curve& c) {
  return c.function.empty() ? c.label : c.function;
}

}  // namespace

std::vector<CurveStyle> curve_styles(const std::vector<Curve>& curves) {
  std::map<std::string, std::string> color_of, dash_of;
  std::set<std::string> colors_used;
  size_t generated = 0;
  std::vector<CurveStyle> styles;
  for (const auto& c : curves) {
    auto [color, new_group] = color_of.try_emplace(group_key(c));
    if (new_group) {
      size_t i = color_of.size() - 1;
      if (i < std::size(kColors)) {
        color->second = kColors[i];
      } else {
        // A generated colour never repeats one already in the chart (bounded: only hundreds of
        // groups would exhaust the distinct hues).
        do color->second = generated_color(generated++);
        while (colors_used.contains(color->second) && generated < 4096);
      }
      colors_used.insert(color->second);
    }
    auto [dash, new_function] = dash_of.try_emplace(function_key(c));
    if (new_function) {
      size_t i = dash_of.size() - 1;
      dash->second = i < std::size(kDashes) ? kDashes[i] : generated_dash(i);
    }
    styles.push_back({color->second, dash->second});
  }
  return styles;
}

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

  const std::vector<CurveStyle> styles = curve_styles(curves);
  auto dash_attribute = [](const CurveStyle& st) {
    return st.dasharray.empty() ? std::string() : fmt::format(" stroke-dasharray=\"{}\"", st.dasharray);
  };
  // One step path per curve: the empirical CDF, rising 1/n at each sample.
  for (size_t i = 0; i < curves.size(); ++i) {
    std::vector<double> v = curves[i].samples_ms;
    std::sort(v.begin(), v.end());
    std::string d;
    if (!v.empty()) {
      d = fmt::format("M{:.1f},{:.1f}", x(v[0]), y(0));
      for (size_t k = 0; k < v.size(); ++k) {
        if (k > 0) d += fmt::format("H{:.1f}", x(v[k]));
        d += fmt::format("V{:.1f}", y(static_cast<double>(k + 1) / static_cast<double>(v.size())));
      }
    }
    s += fmt::format(
        "<path class=\"curve\" data-label=\"{}\" d=\"{}\" fill=\"none\" stroke=\"{}\"{} "
        "stroke-width=\"{}\"/>\n",
        xml_escape(curves[i].label), d, styles[i].color, dash_attribute(styles[i]),
        curves[i].label.starts_with("fnexec") ? 2.5 : 1.5);
  }
  // Legend, right of the plot: one row per curve while they fit at 22 pixels; past that one row per
  // group (its colour) and one per function (its dash), which grows with the sum instead of the
  // product. Rows close up only when even that does not fit.
  struct LegendRow {
    std::string label;
    CurveStyle style;
  };
  std::vector<LegendRow> rows;
  constexpr double kRow = 22;
  const double room = ph - 10;  // from the first row to the bottom of the plot
  auto fits = [&](size_t n) { return n <= 1 || static_cast<double>(n - 1) * kRow <= room; };
  if (fits(curves.size())) {
    for (size_t i = 0; i < curves.size(); ++i) rows.push_back({curves[i].label, styles[i]});
  } else {
    std::vector<LegendRow> functions;
    std::set<std::string> seen_groups, seen_functions;
    for (size_t i = 0; i < curves.size(); ++i) {
      const Curve& c = curves[i];
      if (seen_groups.insert(group_key(c)).second) rows.push_back({group_key(c), {styles[i].color, ""}});
      if (seen_functions.insert(function_key(c)).second)
        functions.push_back({function_key(c), {"#555", styles[i].dasharray}});
    }
    rows.insert(rows.end(), functions.begin(), functions.end());
  }
  s += "<g class=\"legend\">\n";
  const double row = fits(rows.size()) ? kRow : room / static_cast<double>(rows.size() - 1);
  for (size_t i = 0; i < rows.size(); ++i) {
    double ly = kTop + 10 + static_cast<double>(i) * row;
    double lx = kLeft + pw + 20;
    s += fmt::format(
        "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"{3}\"{4} stroke-width=\"3\"/>"
        "<text x=\"{5}\" y=\"{1:.1f}\" dominant-baseline=\"middle\">{6}</text>\n",
        lx, ly, lx + 30, rows[i].style.color, dash_attribute(rows[i].style), lx + 38,
        xml_escape(rows[i].label));
  }
  s += "</g>\n</svg>\n";
  return s;
}

}  // namespace fnexec::bench
