//! Output files: one CSV per scenario and PNG line charts.
//!
//! Charts are drawn with plotters' bitmap backend. Text uses DejaVu Sans, embedded in
//! the binary, so drawing needs no font installed on the machine.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An error writing a report file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The CSV file could not be created, written, read or parsed.
    #[error("failed to write or read {path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: csv::Error,
    },
    /// The chart could not be drawn or saved.
    #[error("failed to draw {path}: {message}")]
    Chart {
        /// The file.
        path: PathBuf,
        /// The error plotters returned.
        message: String,
    },
}

/// Writes `rows` to `path` as CSV, one column per field, with a header line. A `None`
/// field is an empty cell.
///
/// # Errors
///
/// [`ReportError::Csv`] when the file cannot be written.
pub fn write_csv<T: Serialize>(path: &Path, rows: &[T]) -> Result<(), ReportError> {
    let failed = |source| ReportError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut writer = csv::Writer::from_path(path).map_err(failed)?;
    for row in rows {
        writer.serialize(row).map_err(failed)?;
    }
    writer.flush().map_err(|error| failed(error.into()))
}

/// Reads the rows of a CSV file written by [`write_csv`].
///
/// # Errors
///
/// [`ReportError::Csv`] when the file cannot be read or a row does not parse.
pub fn read_csv<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>, ReportError> {
    let failed = |source| ReportError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = csv::Reader::from_path(path).map_err(failed)?;
    let mut rows = Vec::new();
    for row in reader.deserialize() {
        rows.push(row.map_err(failed)?);
    }
    Ok(rows)
}

/// One line of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend entry.
    pub label: String,
    /// The points, in the order they are joined.
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// The caption above the chart.
    pub title: String,
    /// The x axis label.
    pub x_label: String,
    /// The y axis label.
    pub y_label: String,
    /// Whether the x axis is logarithmic, so that growth with log x shows as a line.
    pub log_x: bool,
    /// The lines.
    pub series: Vec<Series>,
}

const WIDTH: u32 = 960;
const HEIGHT: u32 = 600;
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(90, 90, 90),
];

/// Draws `chart` into a PNG at `path`.
///
/// # Errors
///
/// [`ReportError::Chart`] when the chart has no points, or drawing or saving fails.
pub fn draw(path: &Path, chart: &Chart) -> Result<(), ReportError> {
    draw_chart(path, chart).map_err(|message| ReportError::Chart {
        path: path.to_path_buf(),
        message,
    })
}

fn draw_chart(path: &Path, chart: &Chart) -> Result<(), String> {
    register_fonts()?;
    let to_x = |x: f64| {
        if chart.log_x {
            x.max(f64::MIN_POSITIVE).log10()
        } else {
            x
        }
    };
    let points: Vec<(f64, f64)> = chart
        .series
        .iter()
        .flat_map(|series| series.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if points.is_empty() {
        return Err("no points to draw".to_string());
    }
    let (x_min, x_max) = bounds(points.iter().map(|(x, _)| to_x(*x)));
    let (_, y_max) = bounds(points.iter().map(|(_, y)| *y));
    let x_pad = ((x_max - x_min) * 0.05).max(0.05);
    let y_top = if y_max > 0.0 { y_max * 1.15 } else { 1.0 };

    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|error| error.to_string())?;
    let mut context = ChartBuilder::on(&root)
        .caption(&chart.title, ("sans-serif", 26))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d((x_min - x_pad)..(x_max + x_pad), 0.0..y_top)
        .map_err(|error| error.to_string())?;
    let log_x = chart.log_x;
    let x_format = move |x: &f64| {
        if log_x {
            format!("{:.0}", 10f64.powf(*x))
        } else {
            format!("{x}")
        }
    };
    context
        .configure_mesh()
        .x_desc(chart.x_label.as_str())
        .y_desc(chart.y_label.as_str())
        .x_label_formatter(&x_format)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .draw()
        .map_err(|error| error.to_string())?;

    for (number, series) in chart.series.iter().enumerate() {
        let color = COLORS[number % COLORS.len()];
        let line: Vec<(f64, f64)> = series
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| (to_x(*x), *y))
            .collect();
        context
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(|error| error.to_string())?
            .label(series.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
        context
            .draw_series(PointSeries::of_element(
                line,
                4,
                color.filled(),
                &|point, size, style| EmptyElement::at(point) + Circle::new((0, 0), size, style),
            ))
            .map_err(|error| error.to_string())?;
    }
    context
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|error| error.to_string())?;
    root.present().map_err(|error| error.to_string())
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), value| {
        (low.min(value), high.max(value))
    })
}

fn register_fonts() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
                .map_err(|_| "the embedded DejaVu Sans font is invalid".to_string())
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Row {
        members: usize,
        seconds: Option<f64>,
    }

    #[test]
    fn csv_round_trips_with_empty_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.csv");
        let rows = [
            Row {
                members: 10,
                seconds: Some(1.5),
            },
            Row {
                members: 20,
                seconds: None,
            },
        ];

        write_csv(&path, &rows).unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "members,seconds\n10,1.5\n20,\n");
        let read: Vec<Row> = read_csv(&path).unwrap();
        assert_eq!(read, rows);
    }

    #[test]
    fn chart_is_written_as_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        let chart = Chart {
            title: "test".to_string(),
            x_label: "members".to_string(),
            y_label: "seconds".to_string(),
            log_x: true,
            series: vec![Series {
                label: "line".to_string(),
                points: vec![(10.0, 1.0), (100.0, 2.0), (1000.0, 3.0)],
            }],
        };

        draw(&path, &chart).unwrap();

        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }

    #[test]
    fn empty_chart_is_an_error() {
        let chart = Chart {
            title: "empty".to_string(),
            x_label: "x".to_string(),
            y_label: "y".to_string(),
            log_x: false,
            series: Vec::new(),
        };
        let error = draw(Path::new("unused.png"), &chart).unwrap_err();
        assert!(error.to_string().contains("no points"), "{error}");
    }
}
