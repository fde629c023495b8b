#include "data/data_cursor.h"

#include <algorithm>

#include "core/status.h"

namespace pst {

DataCursor::DataCursor(int workers, DataPool pool)
    : pool_(std::move(pool)), assigned_(static_cast<size_t>(workers), -1) {
  PST_CHECK(workers > 0 && pool_.next >= 0);
  std::sort(pool_.holes.begin(), pool_.holes.end());
  before_ = pool_;
}

void DataCursor::assign(const std::vector<uint8_t>& members) {
  PST_CHECK(members.size() == assigned_.size());
  before_ = pool_;
  std::vector<int64_t>& holes = pool_.holes;
  size_t hole = 0;
  for (size_t w = 0; w < assigned_.size(); ++w) {
    if (!members[w]) {
      assigned_[w] = -1;
    } else if (hole < holes.size()) {
      assigned_[w] = holes[hole++];
    } else {
      assigned_[w] = pool_.next++;
    }
  }
  holes.erase(holes.begin(), holes.begin() + static_cast<std::ptrdiff_t>(hole));
}

void DataCursor::assign_all() { assign(std::vector<uint8_t>(assigned_.size(), 1)); }

void DataCursor::applied(const std::vector<uint8_t>& contributors) {
  PST_CHECK(contributors.size() == assigned_.size());
  for (size_t w = 0; w < assigned_.size(); ++w) {
    if (assigned_[w] >= 0 && !contributors[w]) pool_.holes.push_back(assigned_[w]);
    assigned_[w] = -1;
  }
  std::sort(pool_.holes.begin(), pool_.holes.end());
}

}  // namespace pst
