// 3x3, stride 1, padding 1 max pool, vectorised over channels.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "cpu/kernels/common.h"

namespace cnnkernels::cpu {
namespace CPU_CAPABILITY {
namespace {

template <typename TX, typename TY>
void maxpool3x3_rows_impl(const MaxPoolRowsArgs& a) {
  TY* y = static_cast<TY*>(a.y.data);
  const Vec ninf(-std::numeric_limits<float>::infinity());
  for (int64_t oh = a.oh0; oh < a.oh1; ++oh) {
    for (int64_t ow = 0; ow < a.y.Wo; ++ow) {
      TY* yp = y + ((oh - a.oh0) * a.y.Wo + ow) * a.y.ld;
      for (int64_t c0 = 0; c0 < a.C; c0 += V) {
        const int cnt = static_cast<int>(std::min<int64_t>(V, a.C - c0));
        Vec m = ninf;
        for (int64_t ih = std::max<int64_t>(oh - 1, 0); ih <= std::min(oh + 1, a.x.H - 1); ++ih) {
          const TX* row = row_ptr<TX>(a.x, ih);
          for (int64_t iw = std::max<int64_t>(ow - 1, 0); iw <= std::min(ow + 1, a.x.W - 1); ++iw)
            m = vmax(m, load(row + iw * a.x.ld + c0, cnt));
        }
        store(yp + c0, m, cnt);
      }
    }
  }
}

}  // namespace

void maxpool3x3_rows(const MaxPoolRowsArgs& a) {
  with_type(a.x.type, [&](auto tx) {
    with_type(a.y.type, [&](auto ty) { maxpool3x3_rows_impl<decltype(tx), decltype(ty)>(a); });
  });
}

}  // namespace CPU_CAPABILITY
}  // namespace cnnkernels::cpu
